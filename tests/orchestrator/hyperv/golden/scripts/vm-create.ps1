param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
    [long]$DiskGiB,
    [long]$MemoryMiB,
    [string]$SwitchName
)
# Shared preamble: the loader puts it where a script says "# @preamble" (after its
# param block, which PowerShell requires to come first).
# Stop: a failing cmdlet ends the script instead of writing a record and going on.
$ErrorActionPreference = 'Stop'
# Progress records are serialized over WinRM one by one and slow everything down.
$ProgressPreference = 'SilentlyContinue'

function Out-GmiResult {
    # The one output object of every script, as compact JSON (gmi-fsm parses it).
    param([int]$Exit = 0, [hashtable]$Facts = @{}, [object[]]$Artifacts = @(), [string]$Message = '')
    [pscustomobject]@{ exit = $Exit; facts = $Facts; artifacts = $Artifacts; message = $Message } |
        ConvertTo-Json -Depth 5 -Compress
}

function Find-GmiVM {
    # Exact name match: Get-VM -Name treats [ ] * ? as wildcards.
    param([string]$Name)
    Get-VM | Where-Object { $_.Name -ceq $Name } | Select-Object -First 1
}

function Test-GmiOwned {
    # gmi-fsm marks the VMs it creates with the build id in their Notes.
    param($VM, [string]$BuildId)
    $null -ne $VM -and ([string]$VM.Notes).Contains("gmi-fsm build $BuildId")
}
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm) {
    if (Test-GmiOwned -VM $vm -BuildId $BuildId) {
        # Made by an earlier run of this build whose end was not recorded.
        Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id } -Message 'the build VM already exists'
        return
    }
    throw "a VM named '$VmName' already exists and was not made by this build: remove or rename it"
}
# The disk is named like the VM: vmgenie imports "Virtual Hard Disks\<vm name>.vhdx".
$vhd = Join-Path (Join-Path (Join-Path $VmPath $VmName) 'Virtual Hard Disks') "$VmName.vhdx"
if (Test-Path -LiteralPath $vhd) {
    throw "the disk $vhd already exists (left by another VM?): remove it first"
}
$vm = New-VM -Name $VmName -Generation 2 -Path $VmPath -NewVHDPath $vhd `
    -NewVHDSizeBytes ($DiskGiB * 1GB) -MemoryStartupBytes ($MemoryMiB * 1MB) -SwitchName $SwitchName
Set-VM -VM $vm -Notes "gmi-fsm build $BuildId"
Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'VM created'
