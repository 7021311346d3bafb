param(
    [string]$Path,
    [long]$Offset,
    [int]$Length,
    [int]$PieceBytes
)
# @preamble
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
