param(
    [string]$VmName,
    [string]$BuildId,
    [long]$MemoryMiB,
    [bool]$DynamicMemory,
    [long]$Cpus,
    [bool]$SecureBoot,
    [string]$SecureBootTemplate
)
# @preamble
# The checklist's settings for a VM made from a prepared disk (no installer DVD: it
# boots from its disk). Every setting is a "set to": running it again changes nothing.
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($DynamicMemory) {
    Set-VMMemory -VM $vm -DynamicMemoryEnabled $true -StartupBytes ($MemoryMiB * 1MB) `
        -MinimumBytes ([math]::Min(512MB, $MemoryMiB * 1MB)) -MaximumBytes ($MemoryMiB * 1MB)
} else {
    Set-VMMemory -VM $vm -DynamicMemoryEnabled $false -StartupBytes ($MemoryMiB * 1MB)
}
Set-VMProcessor -VM $vm -Count $Cpus
# Automatic checkpoints would leave .avhdx differencing disks behind every start.
Set-VM -VM $vm -AutomaticCheckpointsEnabled $false
if ($SecureBoot) {
    Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate $SecureBootTemplate | Out-Null
} else {
    Set-VMFirmware -VM $vm -EnableSecureBoot Off | Out-Null
}
if ((Get-VMSecurity -VM $vm).TpmEnabled) { Disable-VMTPM -VM $vm | Out-Null }
$disk = Get-VMHardDiskDrive -VM $vm | Select-Object -First 1
Set-VMFirmware -VM $vm -FirstBootDevice $disk | Out-Null
$facts = @{
    'hyperv.generation' = [string]$vm.Generation
    'hyperv.memory_mib' = [string]$MemoryMiB
    'hyperv.dynamic_memory' = [string]$DynamicMemory
    'hyperv.cpus' = [string]$Cpus
    'hyperv.secure_boot' = $(if ($SecureBoot) { $SecureBootTemplate } else { 'off' })
    'hyperv.automatic_checkpoints' = 'False'
    'hyperv.tpm' = 'False'
}
Out-GmiResult -Facts $facts -Message 'VM configured (boots from its disk)'
