param(
    [string]$Name
)
# @preamble
# The folder on the host that SMB share Name serves: transfers over the share reach a
# host path only through it. Exit 1: no such share (an error record, not an exception).
$share = @(Get-SmbShare -Name $Name -ErrorAction SilentlyContinue)
if ($share.Count -eq 0) {
    Out-GmiResult -Exit 1 -Message "the host has no SMB share named '$Name'"
    return
}
Out-GmiResult -Facts @{ 'smb.path' = [string]$share[0].Path } -Message "share $Name is $($share[0].Path)"
