param(
    [string]$VmName,
    [string]$BuildId,
    [int]$TimeoutSeconds
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
# Checkpoints form a tree, and removing one with -IncludeAllChildSnapshots removes its
# subtree: a list read once holds checkpoints that are gone when their turn comes. So the
# tree is read again before each removal, which takes one that is still there. Removing
# a checkpoint merges its .avhdx into the parent (asynchronously, waited for below).
$found = @(Get-VMSnapshot -VM $vm)
$left = $found
$removals = 0
while ($left.Count -gt 0) {
    if ($removals -ge $found.Count) {
        throw "checkpoints still listed after $removals removals: $(($left | ForEach-Object { $_.Name }) -join ', ')"
    }
    Remove-VMSnapshot -VMSnapshot $left[0] -IncludeAllChildSnapshots
    $removals++
    $left = @(Get-VMSnapshot -VM $vm)
}
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
do {
    $disks = @(Get-VMHardDiskDrive -VM $vm | Where-Object { $_.Path -like '*.avhdx' })
    if ($disks.Count -eq 0) {
        Out-GmiResult -Facts @{ 'hyperv.checkpoints_removed' = [string]$found.Count } -Message 'no checkpoints left'
        return
    }
    Start-Sleep -Seconds 2
} while ((Get-Date) -lt $deadline)
throw "differencing disks still attached after $TimeoutSeconds s: $(($disks | ForEach-Object { $_.Path }) -join ', ')"
