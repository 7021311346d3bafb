param(
    [string]$VmName,
    [string]$BuildId
)
# @preamble
# The export must not point at ISO files on this host: drop every DVD drive and
# boot from the disk.
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($vm.State -ne 'Off') { throw "the build VM must be Off to remove its DVD drives (it is $($vm.State))" }
$dvds = @(Get-VMDvdDrive -VM $vm)
$dvds | Remove-VMDvdDrive
$disk = Get-VMHardDiskDrive -VM $vm | Select-Object -First 1
Set-VMFirmware -VM $vm -FirstBootDevice $disk | Out-Null
Out-GmiResult -Message "removed $($dvds.Count) DVD drive(s); boots from the disk"
