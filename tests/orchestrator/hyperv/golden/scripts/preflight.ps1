param(
    [string]$VmPath,
    [string]$ExportPath,
    [string]$SwitchName,
    [int]$DiskGiB,
    [string]$IsoPath
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
