param(
    [string]$VmName,
    [string]$ExportPath
)
# @preamble
# What vmgenie's Import-VM will do, as a dry run: Compare-VM reports what would not
# import. -GenerateNewId because the build VM with the same id still exists here.
$vmcx = @(Get-ChildItem -LiteralPath (Join-Path (Join-Path $ExportPath $VmName) 'Virtual Machines') -Filter '*.vmcx')
if ($vmcx.Count -ne 1) { throw "the export must hold exactly one .vmcx, found $($vmcx.Count)" }
$avhdx = @(Get-ChildItem -LiteralPath (Join-Path $ExportPath $VmName) -Recurse -Filter '*.avhdx')
if ($avhdx.Count -gt 0) { throw "the export holds differencing disks: $(($avhdx | ForEach-Object Name) -join ', ')" }
$report = Compare-VM -Path $vmcx[0].FullName -Copy -GenerateNewId
$problems = @($report.Incompatibilities | ForEach-Object { "$($_.MessageId): $($_.Message)" })
if ($problems.Count -gt 0) {
    Out-GmiResult -Exit 1 -Message ('the export would not import: ' + ($problems -join '; '))
} else {
    Out-GmiResult -Facts @{ 'export.import_check' = 'ok' } -Message 'Compare-VM found no incompatibility'
}
