param(
    [string]$Path,
    [long]$Offset,
    [string]$DataBase64
)
# @preamble
# Writes at Offset (offset 0 starts the file anew): a chunk sent twice lands twice
# at the same place, so a retried upload never corrupts the file.
$dir = Split-Path -Parent $Path
if (-not (Test-Path -LiteralPath $dir -PathType Container)) { New-Item -ItemType Directory -Path $dir -Force | Out-Null }
$mode = if ($Offset -eq 0) { [System.IO.FileMode]::Create } else { [System.IO.FileMode]::OpenOrCreate }
$bytes = [Convert]::FromBase64String($DataBase64)
$stream = [System.IO.File]::Open($Path, $mode, [System.IO.FileAccess]::Write)
try {
    $stream.Seek($Offset, [System.IO.SeekOrigin]::Begin) | Out-Null
    $stream.Write($bytes, 0, $bytes.Length)
    $stream.SetLength($Offset + $bytes.Length)
} finally {
    $stream.Dispose()
}
Out-GmiResult -Facts @{ size = [string]($Offset + $bytes.Length) } -Message "wrote $($bytes.Length) bytes"
