param(
    [string]$Path,
    [long]$Offset
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
# Writes the pieces that arrive as pipeline input (base64 text, in order) at Offset, and
# cuts the file there first: what lay past Offset was never verified. Offset 0 starts the
# file anew. Reports the sha256 of the bytes it wrote, so the sender knows they arrived
# intact before it records them as verified.
$dir = Split-Path -Parent $Path
if (-not (Test-Path -LiteralPath $dir -PathType Container)) { New-Item -ItemType Directory -Path $dir -Force | Out-Null }
$mode = if ($Offset -eq 0) { [System.IO.FileMode]::Create } else { [System.IO.FileMode]::Open }
$sha = [System.Security.Cryptography.SHA256]::Create()
$written = [long]0
$stream = [System.IO.File]::Open($Path, $mode, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
try {
    if ($stream.Length -lt $Offset) {
        throw "the partial file $Path holds $($stream.Length) bytes, fewer than the offset $Offset"
    }
    $stream.SetLength($Offset)
    [void]$stream.Seek($Offset, [System.IO.SeekOrigin]::Begin)
    foreach ($piece in $input) {
        $bytes = [Convert]::FromBase64String([string]$piece)
        $stream.Write($bytes, 0, $bytes.Length)
        [void]$sha.TransformBlock($bytes, 0, $bytes.Length, $null, 0)
        $written += $bytes.Length
    }
} finally {
    $stream.Dispose()
}
[void]$sha.TransformFinalBlock([byte[]]::new(0), 0, 0)
$facts = @{
    written = [string]$written
    size = [string]($Offset + $written)
    sha256 = [BitConverter]::ToString($sha.Hash).Replace('-', '').ToLowerInvariant()
}
Out-GmiResult -Facts $facts -Message "wrote $written bytes at $Offset"
