/// Plots (ScottPlot) written as PNG files: the font they use and the atomic write.
module Mae.Plots

open System.IO

/// TrueType fonts tried for the plots' text, in order (Debian's fonts-dejavu-core first): SkiaSharp
/// is used without fontconfig here, so a font is given to ScottPlot by file.
let private fontFiles =
    [ "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
      "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"
      "/usr/share/fonts/TTF/DejaVuSans.ttf"
      "/Library/Fonts/Arial.ttf"
      @"C:\Windows\Fonts\arial.ttf" ]

/// Registers the first font file found as ScottPlot's default (once); without one, text is left
/// to ScottPlot's own lookup.
let private fontRegistered =
    lazy
        (match fontFiles |> List.tryFind File.Exists with
         | Some file ->
             ScottPlot.Fonts.AddFontFile("Mae plot font", file, false, false)
             // titles and axis labels are bold: the family's bold file where there is one
             let bold = Path.Combine(Path.GetDirectoryName file, Path.GetFileNameWithoutExtension(file).Replace("-Regular", "") + "-Bold.ttf")
             ScottPlot.Fonts.AddFontFile("Mae plot font", (if File.Exists bold then bold else file), true, false)
             ScottPlot.Fonts.Default <- "Mae plot font"
         | None -> ())

/// Makes sure the plots' font is registered (call before building a plot).
let useFont () = fontRegistered.Force()

/// Saves `plot` as a `width` x `height` PNG at `path`, atomically (a temporary file renamed).
let savePng (path: string) (width: int) (height: int) (plot: ScottPlot.Plot) =
    let full = Path.GetFullPath path
    let tmp = full + ".tmp.png"
    try
        plot.SavePng(tmp, width, height) |> ignore
        File.Move(tmp, full, true)
    finally
        if File.Exists tmp then File.Delete tmp
