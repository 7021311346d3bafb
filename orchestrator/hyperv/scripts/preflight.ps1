param(
    [string]$VmPath,
    [string]$ExportPath,
    [string]$SwitchName,
    [int]$DiskGiB,
    [string]$IsoPath
)
# @preamble
$problems = [System.Collections.Generic.List[string]]::new()
if (-not (Get-Module -ListAvailable -Name Hyper-V)) {
    [void]$problems.Add('the Hyper-V PowerShell module is not installed (Enable-WindowsOptionalFeature -Online -FeatureName Microsoft-Hyper-V-Management-PowerShell)')
}
$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = [Security.Principal.WindowsPrincipal]::new($identity)
# S-1-5-32-578 is Hyper-V Administrators, S-1-5-32-544 Administrators (SIDs, not localized names).
$isHvAdmin = $principal.IsInRole([Security.Principal.SecurityIdentifier]::new('S-1-5-32-578'))
$isAdmin = $principal.IsInRole([Security.Principal.SecurityIdentifier]::new('S-1-5-32-544'))
if (-not ($isHvAdmin -or $isAdmin)) {
    [void]$problems.Add("$($identity.Name) is neither in Hyper-V Administrators nor in Administrators")
}
if ($problems.Count -eq 0 -and -not (Get-VMSwitch | Where-Object { $_.Name -ceq $SwitchName })) {
    [void]$problems.Add("no virtual switch named '$SwitchName' (Get-VMSwitch lists them)")
}
$freeGiB = -1
foreach ($dir in @($VmPath, $ExportPath)) {
    if (-not (Test-Path -LiteralPath $dir -PathType Container)) {
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
    }
}
$root = [System.IO.Path]::GetPathRoot((Resolve-Path -LiteralPath $VmPath).ProviderPath)
$drive = [System.IO.DriveInfo]::new($root)
$freeGiB = [math]::Floor($drive.AvailableFreeSpace / 1GB)
if ($freeGiB -lt $DiskGiB) {
    [void]$problems.Add("only $freeGiB GiB free on $root for a $DiskGiB GiB disk")
}
$isoPresent = $IsoPath -ne '' -and (Test-Path -LiteralPath $IsoPath -PathType Leaf)
$facts = @{
    'hyperv.host' = $env:COMPUTERNAME
    'hyperv.os' = [string][Environment]::OSVersion.Version
    'hyperv.user' = $identity.Name
    'hyperv.free_gib' = [string]$freeGiB
    'hyperv.iso_present' = [string]$isoPresent
}
if ($problems.Count -gt 0) {
    Out-GmiResult -Exit 1 -Facts $facts -Message ('preflight failed: ' + ($problems -join '; '))
} else {
    Out-GmiResult -Facts $facts -Message 'host ready'
}
