param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
    [long]$DiskGiB,
    [long]$MemoryMiB,
    [string]$SwitchName
)
# @preamble
# The disk is named like the VM: vmgenie imports "Virtual Hard Disks\<vm name>.vhdx"
# (Export-VM keeps the file name, not the folder).
$vhd = Get-GmiVhdPath -VmPath $VmPath -VmName $VmName -BuildId $BuildId
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm) {
    if (Test-GmiOwned -VM $vm -BuildId $BuildId) {
        # Made by an earlier run of this build whose end was not recorded.
        Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'the build VM already exists'
        return
    }
    if (-not (Test-GmiHalfMade -VM $vm -VhdPath $vhd)) {
        throw "a VM named '$VmName' already exists and was not made by this build: remove or rename it"
    }
    # An earlier run's New-VM went through and its Set-VM below did not: finish it.
} else {
    # A disk at this build's own path but no VM: an earlier New-VM made the disk only.
    if (Test-Path -LiteralPath $vhd) { Remove-Item -LiteralPath $vhd -Force }
    $vm = New-VM -Name $VmName -Generation 2 -Path $VmPath -NewVHDPath $vhd `
        -NewVHDSizeBytes ($DiskGiB * 1GB) -MemoryStartupBytes ($MemoryMiB * 1MB) -SwitchName $SwitchName
}
Set-VM -VM $vm -Notes "gmi-fsm build $BuildId"
Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'VM created'
