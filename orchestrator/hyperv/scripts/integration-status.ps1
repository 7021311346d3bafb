param(
    [string]$VmName,
    [string]$BuildId
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
# Matched by their well-known ids: the Name property is localized.
$known = @{
    '84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47' = 'heartbeat'
    '2A34B1C2-FD73-4043-8A5B-DD2159BC743F' = 'kvp'
    '5CED1297-4598-4915-A5FC-AD21BB4D02A4' = 'vss'
    '9F8233AC-BE49-4C79-8EE3-E7E1985B2077' = 'shutdown'
    '6C09BB55-D683-4DA0-8931-C9BF705F6480' = 'guest_service_interface'
}
$facts = @{}
foreach ($svc in Get-VMIntegrationService -VM $vm) {
    $id = ([string]$svc.Id).Split('\')[-1].ToUpperInvariant()
    if ($known.ContainsKey($id)) {
        $status = if ($svc.Enabled) { [string]$svc.PrimaryStatusDescription } else { 'disabled' }
        $facts["hyperv.ic.$($known[$id])"] = $status
    }
}
Out-GmiResult -Facts $facts -Message 'integration services read'
