param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath
)
# @preamble
# Exit 0: this build's VM exists; 1: no such VM; 2: a VM of that name that is not ours;
# 3: this build's VM, half made (New-VM went through, Set-VM -Notes did not): vm-create
# finishes it when it runs again.
$vm = Find-GmiVM -Name $VmName
if ($null -eq $vm) {
    Out-GmiResult -Exit 1 -Message "no VM named '$VmName'"
} elseif (Test-GmiOwned -VM $vm -BuildId $BuildId) {
    Out-GmiResult -Facts @{ 'hyperv.vm_state' = [string]$vm.State } -Message 'the build VM exists'
} elseif (Test-GmiHalfMade -VM $vm -VhdPath (Get-GmiVhdPath -VmPath $VmPath -VmName $VmName -BuildId $BuildId)) {
    Out-GmiResult -Exit 3 -Message "the build VM '$VmName' is half made (no Notes yet): vm-create finishes it"
} else {
    Out-GmiResult -Exit 2 -Message "a VM named '$VmName' exists but was not made by this build"
}
