param(
    [string]$VmName,
    [string]$BuildId
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
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
# Matched by their well-known ids: the Name property is localized.
$known = @{
    '84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47' = 'heartbeat'
    '2A34B1C2-FD73-4043-8A5B-DD2159BC743F' = 'kvp'
    '5CED1297-4598-4915-A5FC-AD21BB4D02A4' = 'vss'
    '9F8233AC-BE49-4C79-8EE3-E7E1985B2077' = 'shutdown'
    '6C09BB55-D683-4DA0-8931-C9BF705F6480' = 'guest_service_interface'
}
$facts = @{}
foreach ($svc in Get-VMIntegrationService -VM $vm) {
    $id = ([string]$svc.Id).Split('\')[-1].ToUpperInvariant()
    if ($known.ContainsKey($id)) {
        $status = if ($svc.Enabled) { [string]$svc.PrimaryStatusDescription } else { 'disabled' }
        $facts["hyperv.ic.$($known[$id])"] = $status
    }
}
Out-GmiResult -Facts $facts -Message 'integration services read'
