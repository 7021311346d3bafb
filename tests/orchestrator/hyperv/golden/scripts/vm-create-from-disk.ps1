param(
    [string]$VmName,
    [string]$BuildId,
    [string]$VmPath,
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

function Get-GmiVhdPath {
    # Where a build makes its VM's disk: the build id in the folder marks the disk, and so
    # the VM, as this build's from the moment New-VM makes them (New-VM cannot set Notes).
    param([string]$VmPath, [string]$VmName, [string]$BuildId)
    $disks = Join-Path (Join-Path $VmPath $VmName) 'Virtual Hard Disks'
    Join-Path (Join-Path $disks $BuildId) "$VmName.vhdx"
}

function Test-GmiHalfMade {
    # This build's New-VM went through but its Set-VM -Notes did not: no Notes at all, and
    # a disk at this build's own path (see Get-GmiVhdPath). Another's VM is never taken.
    param($VM, [string]$VhdPath)
    $null -ne $VM -and [string]::IsNullOrEmpty([string]$VM.Notes) -and
        (@(Get-VMHardDiskDrive -VM $VM | ForEach-Object { $_.Path }) -contains $VhdPath)
}
# Finishing a prepared disk: the VHDX was uploaded to this build's own disk path
# (Get-GmiVhdPath), named like the VM as vmgenie imports it; New-VM attaches it as it is.
$vhd = Get-GmiVhdPath -VmPath $VmPath -VmName $VmName -BuildId $BuildId
$vm = Find-GmiVM -Name $VmName
if ($null -ne $vm) {
    if (Test-GmiOwned -VM $vm -BuildId $BuildId) {
        Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'the build VM already exists'
        return
    }
    if (-not (Test-GmiHalfMade -VM $vm -VhdPath $vhd)) {
        throw "a VM named '$VmName' already exists and was not made by this build: remove or rename it"
    }
    # An earlier run's New-VM went through and its Set-VM below did not: finish it.
} else {
    if (-not (Test-Path -LiteralPath $vhd -PathType Leaf)) {
        throw "the disk $vhd is not on the host: the upload step puts it there"
    }
    $vm = New-VM -Name $VmName -Generation 2 -Path $VmPath -VHDPath $vhd `
        -MemoryStartupBytes ($MemoryMiB * 1MB) -SwitchName $SwitchName
}
Set-VM -VM $vm -Notes "gmi-fsm build $BuildId"
Out-GmiResult -Facts @{ 'hyperv.vm_id' = [string]$vm.Id; 'hyperv.vhdx_path' = $vhd } -Message 'VM created from the disk'
