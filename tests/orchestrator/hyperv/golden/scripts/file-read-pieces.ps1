param(
    [string]$Path,
    [long]$Offset,
    [int]$Length,
    [int]$PieceBytes
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
# Reads up to Length bytes at Offset, as pieces of PieceBytes (base64 text, in order), and
# the sha256 of all of them, so the reader knows they arrived intact.
$sha = [System.Security.Cryptography.SHA256]::Create()
$buffer = [byte[]]::new($PieceBytes)
$pieces = [System.Collections.Generic.List[object]]::new()
$total = 0
$stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, [System.IO.FileShare]::Read)
try {
    [void]$stream.Seek($Offset, [System.IO.SeekOrigin]::Begin)
    while ($total -lt $Length) {
        $read = $stream.Read($buffer, 0, [Math]::Min($PieceBytes, $Length - $total))
        if ($read -le 0) { break }
        [void]$sha.TransformBlock($buffer, 0, $read, $null, 0)
        [void]$pieces.Add(@{ data = [Convert]::ToBase64String($buffer, 0, $read) })
        $total += $read
    }
} finally {
    $stream.Dispose()
}
[void]$sha.TransformFinalBlock($buffer, 0, 0)
$facts = @{
    read = [string]$total
    sha256 = [BitConverter]::ToString($sha.Hash).Replace('-', '').ToLowerInvariant()
}
Out-GmiResult -Facts $facts -Artifacts $pieces.ToArray() -Message "read $total bytes at $Offset"
