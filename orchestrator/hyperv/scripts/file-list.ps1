param(
    [string]$Path
)
# @preamble
# Every file under a folder, relative path and size (to fetch an export).
$root = (Resolve-Path -LiteralPath $Path).ProviderPath.TrimEnd('\')
$files = @(Get-ChildItem -LiteralPath $root -Recurse -File | ForEach-Object {
    @{ path = $_.FullName.Substring($root.Length + 1); size = [string]$_.Length }
})
Out-GmiResult -Artifacts $files -Message "$($files.Count) file(s)"
