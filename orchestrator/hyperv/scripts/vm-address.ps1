param(
    [string]$VmName,
    [string]$BuildId,
    [int]$TimeoutSeconds,
    [bool]$StartIfOff
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($vm.State -ne 'Running') {
    if (-not $StartIfOff) { throw "the build VM is $($vm.State), not Running" }
    Start-VM -VM $vm
}
# Hyper-V learns a guest's addresses only through KVP (hv_kvp_daemon in the guest).
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
do {
    $all = @(Get-VMNetworkAdapter -VM $vm | ForEach-Object { $_.IPAddresses })
    $ipv4 = $all | Where-Object {
        $_ -match '^\d{1,3}(\.\d{1,3}){3}$' -and $_ -notlike '169.254.*'
    } | Select-Object -First 1
    if ($ipv4) {
        Out-GmiResult -Facts @{ 'hyperv.guest_ipv4' = $ipv4 } -Message "guest address $ipv4"
        return
    }
    Start-Sleep -Seconds 2
} while ((Get-Date) -lt $deadline)
$seen = ($all | Where-Object { $_ }) -join ', '
throw ("no IPv4 address reported through KVP within $TimeoutSeconds s (seen: '$seen'): " +
    'is hv_kvp_daemon (hyperv-daemons / linux-cloud-tools) installed and running in the guest, ' +
    'and does the switch give DHCP leases?')
