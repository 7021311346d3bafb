param(
    [string]$PartPath,
    [string]$Path,
    [string]$Sha256
)
# @preamble
# An upload becomes visible under its name only once its digest is right.
$hash = (Get-FileHash -LiteralPath $PartPath -Algorithm SHA256).Hash.ToLowerInvariant()
if ($hash -ne $Sha256.ToLowerInvariant()) {
    Remove-Item -LiteralPath $PartPath -Force
    throw "the upload of $Path arrived damaged (sha256 $hash, expected $Sha256)"
}
Move-Item -LiteralPath $PartPath -Destination $Path -Force
Out-GmiResult -Facts @{ sha256 = $hash } -Message "$Path verified"
