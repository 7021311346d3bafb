param(
    [string]$VmName,
    [string]$BuildId,
    [int]$TimeoutSeconds
)
# @preamble
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
