"""Check a launchd property list's keys and value types, as `plutil -lint` + launchd would.

There is no plutil or launchctl off macOS, so this parses with `plistlib` and checks every key against
launchd.plist(5): unknown keys and wrong types are errors (launchd ignores or rejects them silently).
`check_appliance_plist` adds what the appliance's service needs. Used by scripts/lint-deploy.sh:
    python -m tests.deploy.launchd_plist images/mps-host/com.stt-appliance.plist
"""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path
from xml.parsers.expat import ExpatError

STRING, BOOL, INT, ARRAY, DICT = str, bool, int, list, dict

# launchd.plist(5): key -> accepted types
LAUNCHD_KEYS: dict[str, tuple[type, ...]] = {
    "Label": (STRING,), "Disabled": (BOOL,), "UserName": (STRING,), "GroupName": (STRING,),
    "inetdCompatibility": (DICT,), "LimitLoadToHosts": (ARRAY,), "LimitLoadFromHosts": (ARRAY,),
    "LimitLoadToSessionType": (STRING, ARRAY), "LimitLoadToHardware": (DICT,), "LimitLoadFromHardware": (DICT,),
    "Program": (STRING,), "ProgramArguments": (ARRAY,), "EnableGlobbing": (BOOL,), "EnableTransactions": (BOOL,),
    "EnablePressuredExit": (BOOL,), "OnDemand": (BOOL,), "ServiceIPC": (BOOL,), "KeepAlive": (BOOL, DICT),
    "RunAtLoad": (BOOL,), "RootDirectory": (STRING,), "WorkingDirectory": (STRING,),
    "EnvironmentVariables": (DICT,), "Umask": (INT, STRING), "TimeOut": (INT,), "ExitTimeOut": (INT,),
    "ThrottleInterval": (INT,), "InitGroups": (BOOL,), "WatchPaths": (ARRAY,), "QueueDirectories": (ARRAY,),
    "StartOnMount": (BOOL,), "StartInterval": (INT,), "StartCalendarInterval": (DICT, ARRAY),
    "StandardInPath": (STRING,), "StandardOutPath": (STRING,), "StandardErrorPath": (STRING,), "Debug": (BOOL,),
    "WaitForDebugger": (BOOL,), "SoftResourceLimits": (DICT,), "HardResourceLimits": (DICT,), "Nice": (INT,),
    "ProcessType": (STRING,), "AbandonProcessGroup": (BOOL,), "LowPriorityIO": (BOOL,),
    "LowPriorityBackgroundIO": (BOOL,), "MaterializeDatalessFiles": (BOOL,), "LaunchOnlyOnce": (BOOL,),
    "MachServices": (DICT,), "Sockets": (DICT,), "LaunchEvents": (DICT,), "SessionCreate": (BOOL,),
    "AssociatedBundleIdentifiers": (STRING, ARRAY), "LegacyTimers": (BOOL,),
}
KEEP_ALIVE_KEYS = {"SuccessfulExit": (BOOL,), "NetworkState": (BOOL,), "PathState": (DICT,),
                   "OtherJobEnabled": (DICT,), "AfterInitialDemand": (DICT,), "Crashed": (BOOL,)}
RESOURCE_LIMIT_KEYS = {"Core", "CPU", "Data", "FileSize", "MemoryLock", "NumberOfFiles", "NumberOfProcesses",
                       "ResidentSetSize", "Stack"}
PROCESS_TYPES = {"Background", "Standard", "Adaptive", "Interactive"}


def _type_ok(value: object, types: tuple[type, ...]) -> bool:
    # plistlib gives bool for <true/>: a bool is not an <integer> even though bool subclasses int
    return any(isinstance(value, t) and not (t is INT and isinstance(value, bool)) for t in types)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join({str: "string", bool: "boolean", int: "integer", list: "array", dict: "dict"}[t] for t in types)


def check_launchd_keys(plist: dict) -> list[str]:
    """Every problem launchd would have with these keys and types (empty when none)."""
    errors = []
    for key, value in plist.items():
        types = LAUNCHD_KEYS.get(key)
        if types is None:
            errors.append(f"{key}: not a launchd key")
        elif not _type_ok(value, types):
            errors.append(f"{key}: expected {_names(types)}, got {type(value).__name__}")
    if not isinstance(plist.get("Label"), str) or not plist.get("Label"):
        errors.append("Label: required")
    if "Program" not in plist and "ProgramArguments" not in plist:
        errors.append("Program or ProgramArguments: one is required")
    for key in ("ProgramArguments", "WatchPaths", "QueueDirectories"):
        if isinstance(plist.get(key), list) and not all(isinstance(v, str) for v in plist[key]):
            errors.append(f"{key}: every item must be a string")
    env = plist.get("EnvironmentVariables")
    if isinstance(env, dict):
        errors += [f"EnvironmentVariables.{k}: expected string, got {type(v).__name__}"
                   for k, v in env.items() if not isinstance(v, str)]
    keep_alive = plist.get("KeepAlive")
    if isinstance(keep_alive, dict):
        for key, value in keep_alive.items():
            if key not in KEEP_ALIVE_KEYS:
                errors.append(f"KeepAlive.{key}: not a KeepAlive key")
            elif not _type_ok(value, KEEP_ALIVE_KEYS[key]):
                errors.append(f"KeepAlive.{key}: expected {_names(KEEP_ALIVE_KEYS[key])}")
    for section in ("SoftResourceLimits", "HardResourceLimits"):
        for key, value in (plist.get(section) or {}).items():
            if key not in RESOURCE_LIMIT_KEYS or not _type_ok(value, (INT,)):
                errors.append(f"{section}.{key}: expected one of {sorted(RESOURCE_LIMIT_KEYS)} with an integer")
    if "ProcessType" in plist and plist["ProcessType"] not in PROCESS_TYPES:
        errors.append(f"ProcessType: expected one of {sorted(PROCESS_TYPES)}, got {plist['ProcessType']!r}")
    return errors


def check_appliance_plist(plist: dict, drain_timeout_sec: float = 30.0) -> list[str]:
    """launchd's rules plus the service's own: restarted, logged, MPS profile, time to drain."""
    errors = check_launchd_keys(plist)
    if not plist.get("KeepAlive"):
        errors.append("KeepAlive: must restart the appliance when it dies")
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        if not str(plist.get(key, "")).startswith(("/", "__PREFIX__/")):
            errors.append(f"{key}: needs an absolute path")
    args = plist.get("ProgramArguments") or []
    if not args or not str(args[0]).startswith(("/", "__PREFIX__/")) or "serve" not in args:
        errors.append("ProgramArguments: expected an absolute stt-appliance path and `serve`")
    if (plist.get("EnvironmentVariables") or {}).get("STT_MODEL_PROFILE") != "apple_silicon_mps":
        errors.append("EnvironmentVariables.STT_MODEL_PROFILE: expected apple_silicon_mps")
    if not plist.get("ExitTimeOut", 20) > drain_timeout_sec:  # launchd's default is 20 s
        errors.append(f"ExitTimeOut: must exceed the drain timeout ({drain_timeout_sec:g} s) or launchd SIGKILLs")
    return errors


def main(paths: list[str]) -> int:
    failed = False
    for path in paths:
        try:
            plist = plistlib.loads(Path(path).read_bytes())
        except (OSError, plistlib.InvalidFileException, ValueError, ExpatError) as err:
            print(f"{path}: not a property list: {err}", file=sys.stderr)
            failed = True
            continue
        for error in check_appliance_plist(plist):
            print(f"{path}: {error}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
