param(
    [string]$VmName,
    [string]$BuildId,
    [long]$MemoryMiB,
    [bool]$DynamicMemory,
    [long]$Cpus,
    [bool]$SecureBoot,
    [string]$SecureBootTemplate
)
# Shared preamble: the loader puts it where a script says "# @preamble" (after its
# param block, which PowerShell requires to come first).
# Stop: a failing cmdlet ends the script instead of writing a record and going on.
$ErrorActionPreference = 'Stop'
# Progress records are serialized over WinRM one by one and slow everything down.
$ProgressPreference = 'SilentlyContinue'

function Out-GmiResult {
    # The one output object of every script, as compact JSON (gmi-fsm parses it).
    param([int]$Exit = 0, [hashtable]$Facts = @{}, [object[]]$Artifacts = @(), [string]$Message = '')
    [pscustomobject]@{ exit = $Exit; facts = $Facts; artifacts = $Artifacts; message = $Message } |
        ConvertTo-Json -Depth 5 -Compress
}

function Find-GmiVM {
    # Exact name match: Get-VM -Name treats [ ] * ? as wildcards.
    param([string]$Name)
    Get-VM | Where-Object { $_.Name -ceq $Name } | Select-Object -First 1
}

function Test-GmiOwned {
    # gmi-fsm marks the VMs it creates with the build id in their Notes.
    param($VM, [string]$BuildId)
    $null -ne $VM -and ([string]$VM.Notes).Contains("gmi-fsm build $BuildId")
}

function Get-GmiVhdPath {
    # Where a build makes its VM's disk: the build id in the folder marks the disk, and so
    # the VM, as this build's from the moment New-VM makes them (New-VM cannot set Notes).
    param([string]$VmPath, [string]$VmName, [string]$BuildId)
    $disks = Join-Path (Join-Path $VmPath $VmName) 'Virtual Hard Disks'
    Join-Path (Join-Path $disks $BuildId) "$VmName.vhdx"
}

function Test-GmiHalfMade {
    # This build's New-VM went through but its Set-VM -Notes did not: no Notes at all, and
    # a disk at this build's own path (see Get-GmiVhdPath). Another's VM is never taken.
    param($VM, [string]$VhdPath)
    $null -ne $VM -and [string]::IsNullOrEmpty([string]$VM.Notes) -and
        (@(Get-VMHardDiskDrive -VM $VM | ForEach-Object { $_.Path }) -contains $VhdPath)
}
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
