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
$job = $null
if ($StopIfRunning) {
    # Without -TurnOff, Stop-VM asks the guest to shut down (Shutdown integration service).
    # As a job, so that this script keeps its own deadline; the job's end is read below,
    # or a refused shutdown would look like a slow one until the deadline.
    $job = Stop-VM -VM $vm -Force -AsJob
}
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
while ((Get-Date) -lt $deadline) {
    if ((Get-VM -Id $vm.Id).State -eq 'Off') {
        if ($null -ne $job) { Remove-Job -Job $job -Force }
        Out-GmiResult -Message 'off'
        return
    }
    if ($null -ne $job -and $job.State -eq 'Failed') {
        Receive-Job -Job $job -ErrorAction SilentlyContinue -ErrorVariable stopErrors | Out-Null
        $reason = @($stopErrors | ForEach-Object { $_.Exception.Message }) -join '; '
        if ($reason -eq '' -and $null -ne $job.JobStateInfo.Reason) { $reason = $job.JobStateInfo.Reason.Message }
        Remove-Job -Job $job -Force
        throw ("Stop-VM could not shut the build VM down: $reason (the guest must run the Shutdown " +
            'integration service: hv_utils, and an OS that honours it)')
    }
    Start-Sleep -Seconds 2
}
if ($null -ne $job) { Remove-Job -Job $job -Force }
throw "the build VM did not power off within $TimeoutSeconds s (state: $((Get-VM -Id $vm.Id).State))"
