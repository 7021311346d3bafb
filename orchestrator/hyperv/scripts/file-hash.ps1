param(
    [string]$Path,
    [string]$ExpectSha256
)
# @preamble
# Exit 0: present (and matching ExpectSha256 when given); 1: missing; 3: different.
if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) {
    Out-GmiResult -Exit 1 -Message "$Path is not on the host"
    return
}
$hash = (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
$size = (Get-Item -LiteralPath $Path).Length
$facts = @{ sha256 = $hash; size = [string]$size }
if ($ExpectSha256 -ne '' -and $hash -ne $ExpectSha256.ToLowerInvariant()) {
    Out-GmiResult -Exit 3 -Facts $facts -Message "$Path has sha256 $hash, expected $ExpectSha256"
} else {
    Out-GmiResult -Facts $facts -Message "$Path sha256 $hash"
}
