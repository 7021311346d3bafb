param(
    [string]$VmName,
    [string]$BuildId,
    [int]$TimeoutSeconds,
    [bool]$StopIfRunning
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($vm.State -eq 'Off') {
    Out-GmiResult -Message 'already off'
    return
}
if ($StopIfRunning) {
    # Without -TurnOff, Stop-VM asks the guest to shut down (Shutdown integration service).
    Stop-VM -VM $vm -Force -AsJob | Out-Null
}
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
while ((Get-Date) -lt $deadline) {
    if ((Get-VM -Id $vm.Id).State -eq 'Off') {
        Out-GmiResult -Message 'off'
        return
    }
    Start-Sleep -Seconds 2
}
throw "the build VM did not power off within $TimeoutSeconds s (state: $((Get-VM -Id $vm.Id).State))"
