param(
    [string]$Path,
    [long]$PrefixLength
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
# A file's size and sha256, and the sha256 of its first PrefixLength bytes, in one pass:
# a transfer resumes only where the bytes already on the host (or the source it reads
# from) hash as the other side says. Exit 1: no such file.
if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) {
    Out-GmiResult -Exit 1 -Message "$Path is not on the host"
    return
}
$whole = [System.Security.Cryptography.SHA256]::Create()
$prefix = [System.Security.Cryptography.SHA256]::Create()
$buffer = [byte[]]::new(4MB)
$done = [long]0
$stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::Read)
try {
    while (($read = $stream.Read($buffer, 0, $buffer.Length)) -gt 0) {
        [void]$whole.TransformBlock($buffer, 0, $read, $null, 0)
        $take = [Math]::Min([long]$read, $PrefixLength - $done)
        if ($take -gt 0) { [void]$prefix.TransformBlock($buffer, 0, [int]$take, $null, 0) }
        $done += $read
    }
} finally {
    $stream.Dispose()
}
[void]$whole.TransformFinalBlock($buffer, 0, 0)
[void]$prefix.TransformFinalBlock($buffer, 0, 0)
$facts = @{
    sha256 = [BitConverter]::ToString($whole.Hash).Replace('-', '').ToLowerInvariant()
    size = [string]$done
    prefix_sha256 = [BitConverter]::ToString($prefix.Hash).Replace('-', '').ToLowerInvariant()
    prefix_length = [string][Math]::Min($done, [Math]::Max([long]0, $PrefixLength))
}
Out-GmiResult -Facts $facts -Message "$Path sha256 $($facts.sha256)"
