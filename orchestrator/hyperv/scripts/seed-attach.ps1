param(
    [string]$VmName,
    [string]$BuildId,
    [string]$SeedPath
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if (-not (Test-Path -LiteralPath $SeedPath -PathType Leaf)) { throw "the seed media $SeedPath is not on the host" }
$dvd = Get-VMDvdDrive -VM $vm | Where-Object { $_.ControllerLocation -eq 2 -and $_.ControllerNumber -eq 0 }
if ($null -eq $dvd) {
    Add-VMDvdDrive -VM $vm -ControllerNumber 0 -ControllerLocation 2 -Path $SeedPath | Out-Null
} else {
    Set-VMDvdDrive -VMDvdDrive $dvd -Path $SeedPath
}
Out-GmiResult -Message 'seed media attached'
