param(
    [string]$VmName,
    [string]$BuildId,
    [string]$ExportPath
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
$final = Join-Path $ExportPath $VmName
$marker = Join-Path $final 'gmi-fsm-export.json'
if (Test-Path -LiteralPath $final) {
    if ((Test-Path -LiteralPath $marker) -and
        ((Get-Content -LiteralPath $marker -Raw | ConvertFrom-Json).build_id -ceq $BuildId)) {
        Out-GmiResult -Facts @{ 'export.dir' = $final } -Message 'already exported by this build'
        return
    }
    throw "the export path $final already exists and is not this build's export: move it away or choose another export_path"
}
# Export into a staging folder owned by this build, then rename: a crash leaves either
# a complete export or a staging folder that the next run may safely delete.
$staging = Join-Path $ExportPath ".gmi-fsm-partial-$BuildId"
if (Test-Path -LiteralPath $staging) { Remove-Item -LiteralPath $staging -Recurse -Force }
New-Item -ItemType Directory -Path $staging | Out-Null
Export-VM -VM $vm -Path $staging
@{ build_id = $BuildId; vm_name = $VmName; exported = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ') } |
    ConvertTo-Json -Compress | Set-Content -LiteralPath (Join-Path (Join-Path $staging $VmName) 'gmi-fsm-export.json')
Move-Item -LiteralPath (Join-Path $staging $VmName) -Destination $final
Remove-Item -LiteralPath $staging -Recurse -Force
Out-GmiResult -Facts @{ 'export.dir' = $final } -Message "exported to $final"
