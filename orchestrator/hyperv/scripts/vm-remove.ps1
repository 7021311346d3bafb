param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
    [string]$SeedPath
)
# @preamble
# Removes this build's VM, its disk and folder, and its seed media; never touches a
# VM of the same name that another build or a person made.
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm -and -not (Test-GmiOwned -VM $vm -BuildId $BuildId)) {
    Out-GmiResult -Message "a VM named '$VmName' exists but is not this build's: left alone"
    return
}
if ($null -ne $vm) {
    if ($vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }
    $disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object Path)
    Remove-VM -VM $vm -Force
    foreach ($d in $disks) { if (Test-Path -LiteralPath $d) { Remove-Item -LiteralPath $d -Force } }
}
$folder = Join-Path $VmPath $VmName
if (Test-Path -LiteralPath $folder) { Remove-Item -LiteralPath $folder -Recurse -Force }
if ($SeedPath -ne '' -and (Test-Path -LiteralPath $SeedPath)) { Remove-Item -LiteralPath $SeedPath -Force }
Out-GmiResult -Message 'build VM removed'
