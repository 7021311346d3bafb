param(
    [string]$VmName,
    [string]$BuildId,
    [string]$ExportPath
)
# @preamble
# Exit 0 when this build's complete export is there (marker, one .vmcx, the VHDX).
$final = Join-Path $ExportPath $VmName
$marker = Join-Path $final 'gmi-fsm-export.json'
$vhd = Join-Path (Join-Path $final 'Virtual Hard Disks') "$VmName.vhdx"
$ok = (Test-Path -LiteralPath $marker) -and (Test-Path -LiteralPath $vhd) -and
    ((Get-Content -LiteralPath $marker -Raw | ConvertFrom-Json).build_id -ceq $BuildId) -and
    (@(Get-ChildItem -LiteralPath (Join-Path $final 'Virtual Machines') -Filter '*.vmcx').Count -eq 1)
if ($ok) { Out-GmiResult -Message 'export present' } else { Out-GmiResult -Exit 1 -Message 'no complete export' }
