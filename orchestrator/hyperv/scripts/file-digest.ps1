param(
    [string]$Path,
    [long]$PrefixLength
)
# @preamble
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
