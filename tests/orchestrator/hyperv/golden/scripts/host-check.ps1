param(
    [string]$VmPath,
    [string]$ExportPath,
    [string]$SwitchName,
    [string]$SmbShare
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
# `gmi-fsm hyperv check`: what the host offers a build, as facts. It only reads:
# nothing is created or changed here; gmi-fsm judges the facts and names the fixes.
$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = [Security.Principal.WindowsPrincipal]::new($identity)
$facts = @{
    'host.name' = $env:COMPUTERNAME
    'host.os_build' = [string][Environment]::OSVersion.Version.Build
    'host.user' = $identity.Name
    'host.powershell' = [string]$PSVersionTable.PSVersion
}
# Rights by well-known SID (group names are localized): Administrators, Hyper-V
# Administrators, Remote Management Users.
foreach ($sid in @('S-1-5-32-544', 'S-1-5-32-578', 'S-1-5-32-580')) {
    $facts["member.$sid"] = [string]$principal.IsInRole([Security.Principal.SecurityIdentifier]::new($sid))
}
$module = @(Get-Module -ListAvailable -Name Hyper-V)
$facts['hyperv.module'] = [string]($module.Count -gt 0)
if ($module.Count -gt 0) {
    $switches = @(Get-VMSwitch | ForEach-Object { $_.Name })
    $facts['switch.names'] = $switches -join '|'
    $facts['switch.found'] = [string]($switches -ccontains $SwitchName)
    # The templates this host knows (root\virtualization\v2); empty when it cannot say.
    $templates = @()
    try {
        $templates = @(Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_SecureBootTemplate' |
            ForEach-Object { [string]$_.ElementName })
    } catch {
        $facts['secureboot.error'] = $_.Exception.Message
    }
    $facts['secureboot.templates'] = $templates -join '|'
}
$folders = [ordered]@{ vm_path = $VmPath; export_path = $ExportPath }
foreach ($key in $folders.Keys) {
    $path = $folders[$key]
    $facts["$key.exists"] = [string](Test-Path -LiteralPath $path -PathType Container)
    # The nearest folder that exists (a build creates the rest), and the free space there.
    $near = $path
    while ($near -ne '' -and -not (Test-Path -LiteralPath $near -PathType Container)) {
        $near = Split-Path -Path $near -Parent
    }
    $facts["$key.nearest"] = $near
    if ($near -ne '') {
        $root = [System.IO.Path]::GetPathRoot((Resolve-Path -LiteralPath $near).ProviderPath)
        $facts["$key.root"] = $root
        $facts["$key.free_gib"] = [string][math]::Floor([System.IO.DriveInfo]::new($root).AvailableFreeSpace / 1GB)
    }
}
if ($SmbShare -ne '') {
    # A share that is not there is an error record, not an exception: it reads as none.
    $share = @()
    try {
        $share = @(Get-SmbShare -Name $SmbShare -ErrorAction SilentlyContinue)
    } catch {
        $facts['smb.error'] = $_.Exception.Message
    }
    $facts['smb.found'] = [string]($share.Count -gt 0)
    if ($share.Count -gt 0) {
        $facts['smb.path'] = [string]$share[0].Path
        $facts['smb.access'] = @(Get-SmbShareAccess -Name $SmbShare | ForEach-Object {
            "$($_.AccountName) $($_.AccessControlType) $($_.AccessRight)"
        }) -join '|'
    }
}
Out-GmiResult -Facts $facts -Message 'host facts read'
