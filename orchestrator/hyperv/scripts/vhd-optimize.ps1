param(
    [string]$VmName,
    [string]$BuildId
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($vm.State -ne 'Off') { throw "the build VM must be Off to compact its disk (it is $($vm.State))" }
$path = (Get-VMHardDiskDrive -VM $vm | Select-Object -First 1).Path
if ($path -like '*.avhdx') { throw "the disk is still a differencing disk ($path): merge checkpoints first" }
$before = (Get-Item -LiteralPath $path).Length
# Full mode reclaims unused blocks only on a disk mounted read-only; otherwise it
# silently falls back to what Prezeroed does.
Mount-VHD -Path $path -ReadOnly | Out-Null
try {
    Optimize-VHD -Path $path -Mode Full | Out-Null
} finally {
    Dismount-VHD -Path $path | Out-Null
}
$after = (Get-Item -LiteralPath $path).Length
$facts = @{ 'hyperv.vhdx_bytes_before' = [string]$before; 'hyperv.vhdx_bytes_after' = [string]$after }
Out-GmiResult -Facts $facts -Message "compacted $before -> $after bytes"
