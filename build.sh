#!/usr/bin/env bash
# Mae build entry point.
#   ./build.sh setup          restore tools and packages, check (and on Debian 12 fix) the native runtime
#   ./build.sh build          setup + build the solution (Release)
#   ./build.sh test           setup + build + every test project; last line "N passed, N failed"
#   ./build.sh demo [FOLDER]  setup + pretrain the tiny image MAE on MNIST (or IDX files in FOLDER)
#   ./build.sh bench          setup + benchmarks (bench micro: BenchmarkDotNet micro-benchmarks)
#   ./build.sh pack           setup + build + Mae.Core / Mae packages in artifacts/feed (version 0.1.0-local)
# Every command runs `setup` first; `setup` is idempotent and installs nothing when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
CONFIG=${CONFIG:-Release}

# glibc returns large blocks to the OS on every free by default; libtorch's CPU temporaries then
# pay mmap/munmap for each op. The library also sets this with mallopt at start-up; the variable
# covers the native code that runs before the first Mae call.
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

log() { printf '[build] %s\n' "$*" >&2; }

libstdcxx_path() {
  local p
  for p in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /usr/lib/libstdc++.so.6; do
    [ -e "$p" ] && { echo "$p"; return 0; }
  done
  ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}'
}

has_glibcxx_3_4_32() {
  local lib
  lib=$(libstdcxx_path)
  [ -n "$lib" ] || return 1
  grep -aq 'GLIBCXX_3\.4\.32' "$lib"
}

# TorchSharp 0.107's libLibTorchSharp.so needs GLIBCXX_3.4.32 (libstdc++ of GCC 13+).
check_native_runtime() {
  if has_glibcxx_3_4_32; then
    return 0
  fi
  local id="" version=""
  if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    id=${ID:-}
    version=${VERSION_ID:-}
  fi
  local fix_cmd
  fix_cmd="echo 'deb http://deb.debian.org/debian trixie main' > /etc/apt/sources.list.d/mae-trixie.list && printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/mae-trixie && apt-get update && apt-get install -y -t trixie libstdc++6"
  if [ "$id" = "debian" ] && [ "$version" = "12" ] && [ "$(id -u)" = "0" ]; then
    log "libstdc++ lacks GLIBCXX_3.4.32, which TorchSharp 0.107's native library needs."
    log "Installing libstdc++6 from Debian 13 (trixie); this brings Debian 13's libc6 with it."
    log "An apt pin (priority 100) keeps every other package on Debian 12."
    echo 'deb http://deb.debian.org/debian trixie main' > /etc/apt/sources.list.d/mae-trixie.list
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/mae-trixie
    log "apt-get update"
    apt-get update -qq
    log "apt-get install -y -t trixie libstdc++6"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie libstdc++6 >&2
    if has_glibcxx_3_4_32; then
      log "libstdc++ now provides GLIBCXX_3.4.32."
      return 0
    fi
    log "error: libstdc++6 from Debian 13 was installed but GLIBCXX_3.4.32 is still missing."
    exit 1
  fi
  log "error: libstdc++ ($(libstdcxx_path)) lacks GLIBCXX_3.4.32, needed by TorchSharp 0.107 (libstdc++ of GCC 13 or newer)."
  if [ "$id" = "debian" ] && [ "$version" = "12" ]; then
    log "On Debian 12, run as root:"
    log "  $fix_cmd"
  else
    log "Install a libstdc++6 from GCC 13 or newer (Debian 13 and Ubuntu 24.04 have one), then run this again."
  fi
  exit 1
}

setup() {
  log "setup: dotnet tools"
  dotnet tool restore >/dev/null
  log "setup: packages (paket restore)"
  dotnet paket restore >/dev/null
  check_native_runtime
}

build() {
  setup
  log "build ($CONFIG)"
  dotnet build Mae.sln -c "$CONFIG" -nologo -v quiet -clp:ErrorsOnly
}

# Each test project prints "N passed, N failed" as its last line; sum them.
run_tests() {
  build
  local total_passed=0 total_failed=0 rc=0 out line p f
  for proj in tests/Properties tests/Unit; do
    log "test: $proj"
    out=$(mktemp)
    set +e
    # strip terminal escape codes (Expecto's progress display) so that summary lines stand alone
    dotnet run --project "$proj" -c "$CONFIG" --no-build -- "$@" 2>&1 | sed -u 's/\x1b\[[0-9;?]*[A-Za-z]//g' | tee "$out"
    local prc=${PIPESTATUS[0]}
    set -e
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1 || true)
    rm -f "$out"
    if [ -z "$line" ]; then
      log "error: $proj printed no summary (exit code $prc)"
      total_failed=$((total_failed + 1))
      rc=1
      continue
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    [ "$prc" -eq 0 ] || rc=1
  done
  # examples and packages, each counted as one test
  run_check() {
    local name=$1; shift
    log "test: $name"
    if "$@"; then total_passed=$((total_passed + 1)); else log "error: $name failed"; total_failed=$((total_failed + 1)); fi
  }
  run_check "examples/CSharpQuickStart on the MNIST fixture" csharp_quickstart
  if run_check "pack Mae.Core and Mae into a local feed" local_feed; then
    run_check "consumer of the NuGet packages from a local feed" consumer_check
    run_check "F# scripts (examples/*.fsx) on the local feed" fsx_scripts
  fi
  evict_local
  [ "$total_failed" -eq 0 ] || rc=1
  echo
  echo "$total_passed passed, $total_failed failed"
  return $rc
}

# The C# quick start, 1 epoch on the committed MNIST fixture, in a scratch folder.
csharp_quickstart() {
  local dir rc=0
  dir=$(mktemp -d)
  (cd "$dir" && dotnet run --project "$ROOT/examples/CSharpQuickStart" -c "$CONFIG" --no-build -- 1 "$ROOT/tests/fixtures/mnist-small") || rc=$?
  [ $rc -eq 0 ] && [ -s "$dir/reconstruction.png" ] || rc=1
  rm -rf "$dir"
  return $rc
}

# Packs Mae.Core and Mae into artifacts/feed with a version unique to this run.
pack() {
  local version=$1
  rm -rf artifacts/feed
  mkdir -p artifacts/feed
  for proj in src/Mae.Core.FSharp/Mae.Core.FSharp.fsproj src/Mae.CSharp/Mae.CSharp.csproj; do
    dotnet pack "$proj" -c "$CONFIG" --no-build -o artifacts/feed -p:PackageVersion="$version" -nologo -v quiet >&2 || return 1
  done
}

# A fresh C# console project that references the packages from the local folder feed only
# (no project reference) builds and pretrains a few steps. Prints "consumer: ... ok" on success.
# The version the local feed carries. Restores cache packages by version, so every use first
# evicts that version from the caches (NuGet's and F# Interactive's), then packs afresh.
LOCAL_VERSION=0.1.0-local
packages_dir() { echo "${NUGET_PACKAGES:-$HOME/.nuget/packages}"; }
evict_local() {
  rm -rf "$(packages_dir)/mae/$LOCAL_VERSION" "$(packages_dir)/mae.core/$LOCAL_VERSION" "$HOME/.packagemanagement/nuget/Cache"
}
local_feed() {
  evict_local
  log "pack $LOCAL_VERSION into artifacts/feed"
  pack "$LOCAL_VERSION" || { log "error: dotnet pack failed"; return 1; }
  # scripts #load this to find the feed (F# Interactive's #i takes absolute paths only)
  printf '#i "nuget: %s/artifacts/feed"\n' "$ROOT" > artifacts/LocalFeed.fsx
}

consumer_check() {
  local version=$LOCAL_VERSION
  local dir
  dir=$(mktemp -d)
  cp tests/Consumer/Program.cs "$dir/"
  cat > "$dir/Consumer.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <RuntimeIdentifier>linux-x64</RuntimeIdentifier>
    <SelfContained>false</SelfContained>
    <ImplicitUsings>enable</ImplicitUsings>
    <Nullable>enable</Nullable>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Mae" Version="$version" />
    <PackageReference Include="TorchSharp-cpu" Version="0.107.0" />
  </ItemGroup>
</Project>
XML
  cat > "$dir/NuGet.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="mae-local" value="$ROOT/artifacts/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="mae-local"><package pattern="Mae" /><package pattern="Mae.*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML
  log "consumer check: build and run a fresh console project in $dir"
  local rc=0
  (cd "$dir" && dotnet build -c Release -nologo -v quiet >&2 && dotnet run -c Release --no-build -- "$ROOT/tests/fixtures/mnist-small") || rc=$?
  rm -rf "$dir"
  return $rc
}

# Every examples/*.fsx, run with dotnet fsi on the MNIST fixture for one epoch, in a scratch folder.
fsx_scripts() {
  local dir rc=0 script
  for script in examples/*.fsx; do
    dir=$(mktemp -d)
    log "dotnet fsi $script"
    (cd "$dir" && dotnet fsi "$ROOT/$script" "$ROOT/tests/fixtures/mnist-small" 1 2>&1 | grep -v "warning NU1603" | tee "$dir/log") || rc=1
    grep -q "linear-probe accuracy" "$dir/log" || rc=1
    rm -rf "$dir"
  done
  return $rc
}

demo() {
  build
  dotnet run --project examples/MnistDemo -c "$CONFIG" --no-build -- "$@"
}

bench() {
  build
  # ./build.sh bench                 step cases + 5,000-step soak + comparison with ../shared/peer
  # ./build.sh bench micro [ARGS]    BenchmarkDotNet micro-benchmarks (ARGS: e.g. --filter '*Mask*')
  # ./build.sh bench COMMAND [ARGS]  one command of benchmarks/Mae.Benchmarks (steps, soak, compare, ...)
  if [ "${1:-}" = "micro" ]; then
    shift
    [ $# -gt 0 ] || set -- --filter '*'
    dotnet run --project benchmarks/Mae.Micro -c "$CONFIG" --no-build -- "$@"
  else
    dotnet run --project benchmarks/Mae.Benchmarks -c "$CONFIG" --no-build -- "$@"
  fi
}

cmd=${1:-build}
shift || true
case "$cmd" in
  setup) setup ;;
  build) build ;;
  test) run_tests "$@" ;;
  demo) demo "$@" ;;
  bench) bench "$@" ;;
  pack) build && local_feed ;;
  *) echo "usage: ./build.sh {setup|build|test|demo [FOLDER]|bench|pack}" >&2; exit 2 ;;
esac
