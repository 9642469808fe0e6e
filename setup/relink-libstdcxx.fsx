// Makes Debian 13's libstdc++.so.6 (GCC 14) load on Debian 12's glibc 2.36.
//
//   dotnet fsi setup/relink-libstdcxx.fsx IN.so OUT.so GLIBC_MAX
//
// TorchSharp 0.107's libLibTorchSharp.so needs GLIBCXX_3.4.32 (libstdc++ of GCC 13 or newer);
// Debian 12 ships GCC 12's. Debian 13's libstdc++ needs glibc 2.38 for one reason only: glibc
// 2.38's headers redirect strtoul & co. to the C23 variants `__isoc23_strtoul` & co., which accept
// a "0b" prefix besides what the old ones accept. Installing Debian 13's libc6 for that upgrades
// base-files, and the machine then says it is Debian 13.
//
// This script rewrites, in a copy of the library, each undefined `__isoc23_NAME` symbol whose
// version is newer than GLIBC_MAX (e.g. 2.36) into the classic `NAME@GLIBC_2.2.5`, and renames the
// then unused version requirement to GLIBC_2.2.5. It only re-points existing entries of the
// dynamic symbol table and the version-needs table (the name `NAME` is the tail of the string
// `__isoc23_NAME` already in .dynstr); no code changes. Any other requirement newer than GLIBC_MAX
// is an error, and so is anything unexpected in the file: the library is then left alone.
open System
open System.IO
open System.Text

let fail (msg: string) =
    eprintfn "relink-libstdcxx: %s" msg
    exit 2

let args = fsi.CommandLineArgs |> Array.skip 1
if args.Length <> 3 then fail "usage: dotnet fsi relink-libstdcxx.fsx IN.so OUT.so GLIBC_MAX (e.g. 2.36)"
let inPath, outPath, glibcMaxText = args[0], args[1], args[2]

let parseVersion (s: string) =
    try s.Split('.') |> Array.map int |> List.ofArray
    with _ -> fail $"GLIBC_MAX must look like 2.36, got '{s}'"
let glibcMax = parseVersion glibcMaxText

let bytes = File.ReadAllBytes inPath
let u16 o = int (BitConverter.ToUInt16(bytes, o))
let u32 o = BitConverter.ToUInt32(bytes, o)
let u64 o = BitConverter.ToUInt64(bytes, o)
let w16 (o: int) (v: int) = BitConverter.GetBytes(uint16 v).CopyTo(bytes, o)
let w32 (o: int) (v: uint32) = BitConverter.GetBytes(v).CopyTo(bytes, o)

if bytes.Length < 64 || bytes[0] <> 0x7Fuy || Encoding.ASCII.GetString(bytes, 1, 3) <> "ELF" then
    fail $"{inPath}: not an ELF file"
if bytes[4] <> 2uy || bytes[5] <> 1uy then fail $"{inPath}: not a 64-bit little-endian ELF file"

type Section = { Name: string; Type: uint32; Offset: int; Size: int; Link: int; EntSize: int }

let sections =
    let shoff = int (u64 0x28)
    let shentsize = u16 0x3A
    let shnum = u16 0x3C
    let shstrndx = u16 0x3E
    let raw =
        [| for i in 0 .. shnum - 1 ->
               let o = shoff + i * shentsize
               u32 o, u32 (o + 4), int (u64 (o + 0x18)), int (u64 (o + 0x20)), int (u32 (o + 0x28)), int (u64 (o + 0x38)) |]
    let _, _, strOff, _, _, _ = raw[shstrndx]
    let cstr (o: int) =
        let e = Array.IndexOf(bytes, 0uy, o)
        Encoding.ASCII.GetString(bytes, o, e - o)
    raw |> Array.map (fun (n, t, off, size, link, ent) ->
        { Name = cstr (strOff + int n); Type = t; Offset = off; Size = size; Link = link; EntSize = ent })

let section name =
    match sections |> Array.tryFind (fun s -> s.Name = name) with
    | Some s -> s
    | None -> fail $"{inPath}: no {name} section"

let dynsym, dynstr, versym, verneed = section ".dynsym", section ".dynstr", section ".gnu.version", section ".gnu.version_r"
let str (o: int) =
    let start = dynstr.Offset + o
    let e = Array.IndexOf(bytes, 0uy, start)
    Encoding.ASCII.GetString(bytes, start, e - start)

/// ELF's System V hash of a version name (vna_hash).
let elfHash (s: string) =
    let mutable h = 0u
    for c in s do
        h <- (h <<< 4) + uint32 c
        let g = h &&& 0xF0000000u
        if g <> 0u then h <- h ^^^ (g >>> 24)
        h <- h &&& ~~~g
    h

/// (offset of the vernaux entry, version name, version index) for the requirements on libc.so.6.
let libcNeeds =
    let mutable o = verneed.Offset
    let mutable result = []
    let mutable fin = false
    while not fin do
        let cnt = u16 (o + 2)
        let file = str (int (u32 (o + 4)))
        let aux = int (u32 (o + 8))
        let next = int (u32 (o + 12))
        let mutable a = o + aux
        for _ in 1 .. cnt do
            if file = "libc.so.6" then
                result <- (a, str (int (u32 (a + 8))), u16 (a + 6)) :: result
            a <- a + int (u32 (a + 12))
        if next = 0 then fin <- true else o <- o + next
    List.rev result

let isGlibc (name: string) = name.StartsWith "GLIBC_" && name.Length > 6 && Char.IsDigit name[6]
let tooNew (name: string) =
    isGlibc name && (compare (parseVersion (name.Substring 6)) glibcMax > 0)

let baseline =
    match libcNeeds |> List.tryFind (fun (_, n, _) -> n = "GLIBC_2.2.5") with
    | Some b -> b
    | None -> fail $"{inPath}: no requirement of GLIBC_2.2.5 on libc.so.6 to re-point to"
let newIndexes = libcNeeds |> List.filter (fun (_, n, _) -> tooNew n) |> List.map (fun (_, _, i) -> i) |> Set.ofList

if newIndexes.IsEmpty then
    eprintfn "relink-libstdcxx: %s needs no glibc newer than %s; copied unchanged" inPath glibcMaxText
else
    let count = dynsym.Size / dynsym.EntSize
    for i in 0 .. count - 1 do
        let so = dynsym.Offset + i * dynsym.EntSize
        let ver = u16 (versym.Offset + 2 * i) &&& 0x7FFF
        if newIndexes.Contains ver then
            let nameOff = int (u32 so)
            let name = str nameOff
            let shndx = u16 (so + 6)
            if shndx <> 0 then fail $"{inPath}: defined symbol {name} carries a glibc version newer than {glibcMaxText}"
            if not (name.StartsWith "__isoc23_") then
                fail $"{inPath}: {name} needs a glibc newer than {glibcMaxText}; only __isoc23_* symbols can be re-pointed"
            let plain = name.Substring 9
            if str (nameOff + 9) <> plain then fail $"{inPath}: unexpected string table layout for {name}"
            w32 so (uint32 (nameOff + 9))
            eprintfn "relink-libstdcxx: %s -> %s@GLIBC_2.2.5" name plain
    let baseAux, _, _ = baseline
    for (a, n, _) in libcNeeds do
        if tooNew n then
            w32 a (u32 baseAux)                 // vna_hash
            w32 (a + 8) (u32 (baseAux + 8))     // vna_name
            eprintfn "relink-libstdcxx: requirement %s -> GLIBC_2.2.5" n
    if elfHash "GLIBC_2.2.5" <> u32 baseAux then fail $"{inPath}: GLIBC_2.2.5's hash does not match its entry"

let tmp = outPath + ".tmp"
File.WriteAllBytes(tmp, bytes)
File.Move(tmp, outPath, true)
