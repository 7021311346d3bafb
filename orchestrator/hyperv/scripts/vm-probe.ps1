param(
    [string]$VmName,
    [string]$BuildId
)
# @preamble
# Exit 0: this build's VM exists; 1: no such VM; 2: a VM of that name that is not ours.
$vm = Find-GmiVM -Name $VmName
if ($null -eq $vm) {
    Out-GmiResult -Exit 1 -Message "no VM named '$VmName'"
} elseif (Test-GmiOwned -VM $vm -BuildId $BuildId) {
    Out-GmiResult -Facts @{ 'hyperv.vm_state' = [string]$vm.State } -Message 'the build VM exists'
} else {
    Out-GmiResult -Exit 2 -Message "a VM named '$VmName' exists but was not made by this build"
}
