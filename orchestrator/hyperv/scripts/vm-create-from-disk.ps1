param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
    [long]$MemoryMiB,
    [string]$SwitchName
)
# @preamble
# Finishing a prepared disk: the VHDX was uploaded to this build's own disk path
# (Get-GmiVhdPath), named like the VM as vmgenie imports it; New-VM attaches it as it is.
$vhd = Get-GmiVhdPath -VmPath $VmPath -VmName $VmName -BuildId $BuildId
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm) {
    if (Test-GmiOwned -VM $vm -BuildId $BuildId) {
        Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'the build VM already exists'
        return
    }
    if (-not (Test-GmiHalfMade -VM $vm -VhdPath $vhd)) {
        throw "a VM named '$VmName' already exists and was not made by this build: remove or rename it"
    }
    # An earlier run's New-VM went through and its Set-VM below did not: finish it.
} else {
    if (-not (Test-Path -LiteralPath $vhd -PathType Leaf)) {
        throw "the disk $vhd is not on the host: the upload step puts it there"
    }
    $vm = New-VM -Name $VmName -Generation 2 -Path $VmPath -VHDPath $vhd `
        -MemoryStartupBytes ($MemoryMiB * 1MB) -SwitchName $SwitchName
}
Set-VM -VM $vm -Notes "gmi-fsm build $BuildId"
Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'VM created from the disk'
