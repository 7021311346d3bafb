param(
    [string]$Path,
    [long]$Offset,
    [int]$Length
)
# @preamble
$stream = [System.IO.File]::OpenRead($Path)
try {
    $buffer = [byte[]]::new($Length)
    $stream.Seek($Offset, [System.IO.SeekOrigin]::Begin) | Out-Null
    $read = $stream.Read($buffer, 0, $Length)
    $data = [Convert]::ToBase64String($buffer, 0, $read)
} finally {
    $stream.Dispose()
}
Out-GmiResult -Facts @{ data = $data; read = [string]$read } -Message "read $read bytes"
