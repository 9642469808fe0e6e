#!/usr/bin/env bash
# Mae build entry point.
#   ./build.sh setup          restore tools and packages, check (and on Debian 12 fix) the native runtime, install ffmpeg when missing
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

# TorchSharp 0.107's libLibTorchSharp.so needs GLIBCXX_3.4.32 (libstdc++ of GCC 13+); Debian 12 has
# GCC 12's. Debian 13's libstdc++6 needs glibc 2.38 for one symbol only (__isoc23_strtoul), and
# Debian 13's libc6 breaks base-files (<< 13.3), so installing it the plain way upgrades ~27
# packages and turns the machine into Debian 13. Instead, on Debian 12 as root, setup installs one
# package: Debian 13's libstdc++6, downloaded through apt (signed), its one C23 symbol re-pointed to
# the classic strtoul (setup/relink-libstdcxx.fsx) and its libc6 dependency lowered to 2.36,
# rebuilt as libstdc++6 14.2.0-19~mae1. No apt source or pin is added; every other package,
# base-files included, stays as it is. apt's simulation of the install is printed first.
MAE_APT_DIR=${MAE_APT_DIR:-/var/cache/mae/apt-trixie}

mae_apt() {
  apt-get -o Dir::State::Lists="$MAE_APT_DIR/lists" -o Dir::Etc::SourceList="$MAE_APT_DIR/sources.list" \
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Cache="$MAE_APT_DIR/cache" -o APT::Sandbox::User=root "$@"
}

install_bookworm_libstdcxx() {
  local work glibc deb pkgver
  mkdir -p "$MAE_APT_DIR/lists/partial" "$MAE_APT_DIR/cache/archives/partial"
  echo 'deb http://deb.debian.org/debian trixie main' > "$MAE_APT_DIR/sources.list"
  log "apt-get update (Debian 13's package lists, in $MAE_APT_DIR only; the system's sources are untouched)"
  mae_apt update -qq
  work=$(mktemp -d)
  log "apt-get download libstdc++6/trixie"
  (cd "$work" && mae_apt download -qq libstdc++6/trixie) || { log "error: could not download Debian 13's libstdc++6"; exit 1; }
  deb=$(ls "$work"/libstdc++6_*.deb)
  dpkg-deb -R "$deb" "$work/pkg"
  glibc=$(dpkg-query -W -f='${Version}' libc6 | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
  local lib
  lib=$(ls "$work"/pkg/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.*)
  log "re-pointing symbols newer than glibc $glibc in $(basename "$lib")"
  dotnet fsi "$ROOT/setup/relink-libstdcxx.fsx" "$lib" "$lib" "$glibc" >&2
  pkgver=$(sed -n 's/^Version: //p' "$work/pkg/DEBIAN/control")~mae1
  sed -i -E \
    -e "s/^Version: .*/Version: $pkgver/" \
    -e "s/^Depends: .*/Depends: libc6 (>= $glibc), libgcc-s1 (>= 4.3)/" \
    -e "s/^(Description: .*)/\1 (Debian 13's, relinked for glibc $glibc by Mae's build.sh)/" \
    "$work/pkg/DEBIAN/control"
  (cd "$work/pkg" && find usr -type f -exec md5sum {} + > DEBIAN/md5sums)
  mkdir -p /var/cache/mae
  dpkg-deb -b -Zxz "$work/pkg" "/var/cache/mae/libstdc++6_${pkgver}_amd64.deb" >/dev/null
  deb="/var/cache/mae/libstdc++6_${pkgver}_amd64.deb"
  rm -rf "$work"
  log "what apt will change (apt-get -s install $deb):"
  apt-get -s install "$deb" 2>/dev/null | grep -E '^(Inst|Remv|Conf) |upgraded|newly installed' | sed 's/^/[build]   /' >&2
  if apt-get -s install "$deb" 2>/dev/null | grep -E '^(Inst|Remv) ' | grep -vq '^Inst libstdc++6 '; then
    log "error: apt would change more than libstdc++6; nothing was installed. Run: apt-get -s install $deb"
    exit 1
  fi
  log "apt-get install $deb"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" 2>&1 | grep -vE "^\(Reading database|^debconf: " >&2 || true
}

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
  if [ "$id" = "debian" ] && [ "$version" = "12" ] && [ "$(id -u)" = "0" ]; then
    log "libstdc++ lacks GLIBCXX_3.4.32, which TorchSharp 0.107's native library needs."
    install_bookworm_libstdcxx
    if has_glibcxx_3_4_32; then
      log "libstdc++ now provides GLIBCXX_3.4.32; /etc/os-release still says: $(. /etc/os-release; echo "$PRETTY_NAME")"
      return 0
    fi
    log "error: the rebuilt libstdc++6 was installed but GLIBCXX_3.4.32 is still missing."
    exit 1
  fi
  log "error: libstdc++ ($(libstdcxx_path)) lacks GLIBCXX_3.4.32, needed by TorchSharp 0.107 (libstdc++ of GCC 13 or newer)."
  if [ "$id" = "debian" ] && [ "$version" = "12" ]; then
    log "On Debian 12, run this once as root (sudo ./build.sh setup): it installs Debian 13's libstdc++6,"
    log "relinked for Debian 12's glibc, and changes no other package."
  else
    log "Install a libstdc++6 from GCC 13 or newer (Debian 13 and Ubuntu 24.04 have one), then run this again."
  fi
  exit 1
}

# Video files are decoded by ffmpeg (FFMpegCore runs ffmpeg and ffprobe); the tests make short
# clips with it. Installed from the distribution's packages when missing (as root), without the
# recommended extras.
check_ffmpeg() {
  if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    log "ffmpeg is missing (video files are decoded by it): apt-get install --no-install-recommends ffmpeg"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
    return 0
  fi
  log "warning: ffmpeg is not installed; reading video files (and the tests that make clips) need it:"
  log "  sudo apt-get install --no-install-recommends ffmpeg"
}

setup() {
  log "setup: dotnet tools"
  dotnet tool restore >/dev/null
  log "setup: packages (paket restore)"
  dotnet paket restore >/dev/null
  check_native_runtime
  check_ffmpeg
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
  run_check "examples/CSharpQuickStart video (Moving-MNIST from the fixture's digits)" csharp_video
  run_check "examples/CSharpQuickStart series (the fixture's CSV series)" csharp_series
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

# The C# video example, 1 epoch on 256 Moving-MNIST clips of the fixture's digits.
csharp_video() {
  local dir rc=0 out
  dir=$(mktemp -d)
  out=$(cd "$dir" && dotnet run --project "$ROOT/examples/CSharpQuickStart" -c "$CONFIG" --no-build -- video 1 "$ROOT/tests/fixtures/mnist-small" 256 2>&1) || rc=$?
  echo "$out" | tail -n 2
  [ $rc -eq 0 ] && echo "$out" | grep -q "video: linear-probe accuracy" || rc=1
  rm -rf "$dir"
  return $rc
}

# The C# series example, 2 epochs on the committed CSV fixture.
csharp_series() {
  local out rc=0
  out=$(dotnet run --project "$ROOT/examples/CSharpQuickStart" -c "$CONFIG" --no-build -- series 2 "$ROOT/tests/fixtures/series-small.csv" 2>&1) || rc=$?
  echo "$out" | tail -n 1
  [ $rc -eq 0 ] && echo "$out" | grep -q "series: linear-probe accuracy" || rc=1
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
