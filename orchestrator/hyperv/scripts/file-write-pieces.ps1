param(
    [string]$Path,
    [long]$Offset
)
# @preamble
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
