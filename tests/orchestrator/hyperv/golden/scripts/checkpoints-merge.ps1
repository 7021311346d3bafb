param(
    [string]$VmName,
    [string]$BuildId,
    [int]$TimeoutSeconds
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
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
$snapshots = @(Get-VMSnapshot -VM $vm)
if ($snapshots.Count -gt 0) {
    # Removing a checkpoint merges its .avhdx into the parent (asynchronously).
    $snapshots | Remove-VMSnapshot -IncludeAllChildSnapshots
}
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
do {
    $disks = @(Get-VMHardDiskDrive -VM $vm | Where-Object { $_.Path -like '*.avhdx' })
    if ($disks.Count -eq 0) {
        Out-GmiResult -Facts @{ 'hyperv.checkpoints_removed' = [string]$snapshots.Count } -Message 'no checkpoints left'
        return
    }
    Start-Sleep -Seconds 2
} while ((Get-Date) -lt $deadline)
throw "differencing disks still attached after $TimeoutSeconds s: $(($disks | ForEach-Object Path) -join ', ')"
