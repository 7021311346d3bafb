param(
    [string]$VmName,
    [string]$BuildId,
    [bool]$PressKey
)
# @preamble
$vm = Find-GmiVM -Name $VmName
if (-not (Test-GmiOwned -VM $vm -BuildId $BuildId)) { throw "the build VM '$VmName' is missing or not ours" }
if ($vm.State -eq 'Running') {
    Out-GmiResult -Message 'already running'
    return
}
Start-VM -VM $vm
if ($PressKey) {
    # Gen 2 firmware boots a DVD only after "Press any key to boot from CD or DVD...":
    # type Enter into the VM's keyboard (WMI, root\virtualization\v2) for a few seconds.
    $kb = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_Keyboard |
        Where-Object { $_.SystemName -eq [string]$vm.Id } | Select-Object -First 1
    for ($i = 0; $i -lt 10 -and $null -ne $kb; $i++) {
        Start-Sleep -Milliseconds 700
        Invoke-CimMethod -InputObject $kb -MethodName TypeKey -Arguments @{ keyCode = 13 } | Out-Null
    }
}
Out-GmiResult -Message 'started'
