"""The ``hyperv`` host kind: Hyper-V over PowerShell Remoting (see docs/hyperv.md).

Modules, one job each: ``executor`` (the seam: PowerShellExecutor, PsResult),
``psrp`` (PowerShell Remoting via pypsrp), ``simulator`` (HyperVSimulator, NOT
Hyper-V), ``scripts`` (the fixed .ps1 scripts), ``invoke`` (one script, one result
object), ``transfer`` (files in chunks), ``seed`` (unattended-install media),
``plan`` (host steps per stage), ``target`` (HyperVTarget), ``host`` (HyperVHost),
``connect`` (spec -> host and executor).
"""
