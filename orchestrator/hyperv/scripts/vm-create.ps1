param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
    [long]$DiskGiB,
    [long]$MemoryMiB,
    [string]$SwitchName
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm) {
    if (Test-GmiOwned -VM $vm -BuildId $BuildId) {
        # Made by an earlier run of this build whose end was not recorded.
        Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id } -Message 'the build VM already exists'
        return
    }
    throw "a VM named '$VmName' already exists and was not made by this build: remove or rename it"
}
# The disk is named like the VM: vmgenie imports "Virtual Hard Disks\<vm name>.vhdx".
$vhd = Join-Path (Join-Path (Join-Path $VmPath $VmName) 'Virtual Hard Disks') "$VmName.vhdx"
if (Test-Path -LiteralPath $vhd) {
    throw "the disk $vhd already exists (left by another VM?): remove it first"
}
$vm = New-VM -Name $VmName -Generation 2 -Path $VmPath -NewVHDPath $vhd `
    -NewVHDSizeBytes ($DiskGiB * 1GB) -MemoryStartupBytes ($MemoryMiB * 1MB) -SwitchName $SwitchName
Set-VM -VM $vm -Notes "gmi-fsm build $BuildId"
Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'VM created'
