using System;
using System.Collections.Generic;
using System.Linq;

namespace Mae
{
    /// <summary>How the pretraining pass chooses the hidden tokens.</summary>
    public enum MaskingKind
    {
        /// <summary>A random subset per sample (MAE's default).</summary>
        Random,
        /// <summary>One random subset for the whole batch.</summary>
        RandomShared,
        /// <summary>BEiT-style rectangles on the patch grid.</summary>
        BlockWise,
        /// <summary>Tube masking (VideoMAE): one spatial mask per clip, the same in every time slot.</summary>
        Tube,
        /// <summary>Per sample and per channel (PatchTST): channel-independent series only.</summary>
        RandomPerChannel,
    }

    /// <summary>How attention is computed (same result, different speed).</summary>
    public enum AttentionKind
    {
        /// <summary>Plain matmul–softmax–matmul; the faster one on CPUs measured so far.</summary>
        Math,
        /// <summary>libtorch's fused scaled_dot_product_attention.</summary>
        Sdpa,
    }

    /// <summary>
    /// Immutable settings of a transformer stack (encoder or decoder). Every method returns a new
    /// builder, so one can be shared as a preset.
    /// </summary>
    public sealed class StackBuilder
    {
        internal StackBuilder(int width, int depth, int heads, double mlpRatio)
        {
            WidthValue = width; DepthValue = depth; HeadsValue = heads; MlpRatioValue = mlpRatio;
        }

        internal int WidthValue { get; }
        internal int DepthValue { get; }
        internal int HeadsValue { get; }
        internal double MlpRatioValue { get; }

        /// <summary>Token width D (a positive multiple of 4, divisible by the head count).</summary>
        public StackBuilder Width(int width) => new(width, DepthValue, HeadsValue, MlpRatioValue);

        /// <summary>Number of transformer blocks (at least 1).</summary>
        public StackBuilder Depth(int depth) => new(WidthValue, depth, HeadsValue, MlpRatioValue);

        /// <summary>Attention heads (a divisor of the width).</summary>
        public StackBuilder Heads(int heads) => new(WidthValue, DepthValue, heads, MlpRatioValue);

        /// <summary>MLP hidden width as a multiple of the width (encoder only; default 4).</summary>
        public StackBuilder MlpRatio(double ratio) => new(WidthValue, DepthValue, HeadsValue, ratio);
    }

    /// <summary>
    /// Builds a masked autoencoder (images, video, time series). Immutable: each call returns a new builder.
    /// <code>
    /// using var mae = MaeBuilder.ForImages(imageSize: 28, patchSize: 7, channels: 1)
    ///     .MaskRatio(0.75).Encoder(e => e.Width(128).Depth(4).Heads(4))
    ///     .Decoder(d => d.Width(128).Depth(1).Heads(4)).NormPixLoss().Seed(0).Build();
    /// </code>
    /// </summary>
    public sealed class MaeBuilder
    {
        private readonly MaeConfig _config;
        private readonly long _seed;
        private readonly string? _device;

        private MaeBuilder(MaeConfig config, long seed, string? device)
        {
            _config = config; _seed = seed; _device = device;
        }

        private MaeBuilder With(MaeConfig config) => new(config, _seed, _device);

        /// <summary>
        /// Square images of <paramref name="imageSize"/> pixels cut into square patches, with the
        /// tiny preset's encoder and decoder until changed.
        /// </summary>
        public static MaeBuilder ForImages(int imageSize, int patchSize, int channels = 3) =>
            ForImages(imageSize, imageSize, patchSize, patchSize, channels);

        /// <summary>Images of any shape cut into (possibly rectangular) patches.</summary>
        public static MaeBuilder ForImages(int imageHeight, int imageWidth, int patchHeight, int patchWidth, int channels) =>
            new(MaeConfigModule.withImage(imageHeight, imageWidth, patchHeight, patchWidth, channels, MaeConfigModule.tiny),
                0, null);

        /// <summary>
        /// Video clips [N, C, T, H, W] of <paramref name="frames"/> square frames of
        /// <paramref name="frameSize"/> pixels, cut into tubelets of <paramref name="tubeletSize"/>
        /// frames × <paramref name="patchSize"/>² pixels (VideoMAE: 16 frames, 224, 2, 16), with the
        /// tiny video preset's encoder (128 × 4) and decoder (128 × 1) until changed, tube masking
        /// at 90%, no cls token and VideoMAE's sinusoid positions. Sizes are checked by
        /// <see cref="Build"/>: frames must be a multiple of the tubelet length and the frame size of
        /// the patch size.
        /// </summary>
        public static MaeBuilder ForVideo(int frames, int frameSize, int tubeletSize = 2, int patchSize = 16, int channels = 3) =>
            ForVideo(frames, frameSize, frameSize, tubeletSize, patchSize, patchSize, channels);

        /// <summary>Video clips with frames of any shape cut into (possibly rectangular) tubelets.</summary>
        public static MaeBuilder ForVideo(int frames, int frameHeight, int frameWidth, int tubeletSize, int patchHeight, int patchWidth, int channels) =>
            new(MaeConfigModule.withVideo(frames, frameHeight, frameWidth, tubeletSize, patchHeight, patchWidth, channels, MaeConfigModule.videoTiny),
                0, null);

        /// <summary>
        /// A preset of <paramref name="modality"/> ("image", "video" or "timeseries") by name (the
        /// series presets: tiny, tsformer, patchtst); for images
        /// <see cref="MaeBuilder.FromPreset(string)"/>'s; for video tiny (8 grey 48×48 frames, tubelet 2×8×8)
        /// and VideoMAE's small, base, large, huge (16 RGB frames of 224×224, tubelet 2×16×16, their
        /// decoders). Throws <see cref="ArgumentException"/> naming <c>preset</c> or
        /// <c>modality</c> for another name.
        /// </summary>
        public static MaeBuilder FromPreset(string modality, string preset) => new(MaeConfigModule.ofModality(modality, preset), 0, null);

        /// <summary>
        /// Multivariate series [N, C, T] of <paramref name="channels"/> channels and
        /// <paramref name="length"/> steps, cut into segments of <paramref name="segmentLength"/>
        /// steps every <paramref name="segmentStride"/> steps (null: side by side; smaller overlaps,
        /// as PatchTST's stride); <paramref name="channelIndependent"/>: each channel its own
        /// token sequence through shared weights (PatchTST), else a token holds every channel
        /// (TSFormer-style); <paramref name="revIN"/>: RevIN instance normalisation. The tiny series
        /// preset's encoder (64 × 2) and decoder (64 × 1) until changed, 50% random masking per
        /// sample, masked MSE. Sizes are checked by <see cref="Build"/> (a length shorter than one
        /// segment names <c>Length</c>).
        /// </summary>
        public static MaeBuilder ForTimeSeries(int channels, int length, int segmentLength = 8, int? segmentStride = null,
            bool channelIndependent = true, bool revIN = false)
        {
            var tiny = MaeConfigModule.seriesTiny;
            var input = Modality.NewTimeSeries(new SeriesInput(channels, length, segmentLength, segmentStride ?? segmentLength,
                channelIndependent, revIN, Mae.SeriesLoss.Mse));
            return new(new MaeConfig(input, tiny.EmbedDim, tiny.Depth, tiny.Heads, tiny.DecoderEmbedDim, tiny.DecoderDepth, tiny.DecoderHeads,
                tiny.MlpRatio, tiny.Masking, tiny.NormPixLoss, tiny.ClsToken, tiny.LearnedPosEmbed, tiny.Attention, tiny.EncoderInput), 0, null);
        }

        /// <summary>Series models: masked L1 (TSFormer) instead of masked MSE when true.</summary>
        public MaeBuilder L1Loss(bool enabled = true)
        {
            if (!_config.Input.IsTimeSeries)
                throw new InvalidOperationException($"L1Loss applies to time-series models; this builder is for {_config.Modality}.");
            var s = _config.Series;
            var input = Modality.NewTimeSeries(new SeriesInput(s.Channels, s.Length, s.PatchLength, s.PatchStride, s.ChannelIndependent, s.RevIN,
                enabled ? Mae.SeriesLoss.L1 : Mae.SeriesLoss.Mse));
            var c = _config;
            return With(new MaeConfig(input, c.EmbedDim, c.Depth, c.Heads, c.DecoderEmbedDim, c.DecoderDepth, c.DecoderHeads,
                c.MlpRatio, c.Masking, c.NormPixLoss, c.ClsToken, c.LearnedPosEmbed, c.Attention, c.EncoderInput));
        }

        /// <summary>Video models: VideoMAE's 1D sinusoid table (default), or a 3D sin-cos table when true.</summary>
        public MaeBuilder SinCos3dPositions(bool enabled = true)
        {
            if (!_config.Input.IsVideo)
                throw new InvalidOperationException($"SinCos3dPositions applies to video models; this builder is for {_config.Modality}.");
            var v = _config.Video;
            var input = Modality.NewVideo(new VideoInput(v.Frames, v.FrameSize, v.TubeletSize, v.PatchSize, v.Channels,
                enabled ? VideoPositions.SinCos3d : VideoPositions.Sinusoid));
            var c = _config;
            return With(new MaeConfig(input, c.EmbedDim, c.Depth, c.Heads, c.DecoderEmbedDim, c.DecoderDepth, c.DecoderHeads,
                c.MlpRatio, c.Masking, c.NormPixLoss, c.ClsToken, c.LearnedPosEmbed, c.Attention, c.EncoderInput));
        }

        /// <summary>
        /// A preset by name: tiny (28×28 grey, patch 7), base, large, huge (224×224 RGB, the MAE
        /// paper's ViT shapes). Throws <see cref="ArgumentException"/> naming <c>preset</c> for
        /// another name.
        /// </summary>
        public static MaeBuilder FromPreset(string preset) => new(MaeConfigModule.ofName(preset), 0, null);

        /// <summary>The image preset names <see cref="FromPreset(string)"/> accepts.</summary>
        public static IReadOnlyList<string> PresetNames => MaeConfigModule.names.ToArray();

        /// <summary>Share of tokens hidden during pretraining, in [0, 1).</summary>
        public MaeBuilder MaskRatio(double ratio) => Masking(KindOf(_config.Masking), ratio);

        /// <summary>Masking kind and ratio.</summary>
        public MaeBuilder Masking(MaskingKind kind, double ratio) => With(Copy(masking: kind switch
        {
            MaskingKind.RandomShared => MaskingStrategy.NewRandomShared(ratio),
            MaskingKind.BlockWise => MaskingStrategy.NewBlockWise(ratio),
            MaskingKind.Tube => MaskingStrategy.NewTube(ratio),
            MaskingKind.RandomPerChannel => MaskingStrategy.NewRandomPerChannel(ratio),
            _ => MaskingStrategy.NewRandomPerSample(ratio),
        }));

        /// <summary>Configures the encoder (width, depth, heads, MLP ratio).</summary>
        public MaeBuilder Encoder(Func<StackBuilder, StackBuilder> configure)
        {
            ArgumentNullException.ThrowIfNull(configure);
            var s = configure(new StackBuilder(_config.EmbedDim, _config.Depth, _config.Heads, _config.MlpRatio))
                ?? throw new ArgumentException("configure returned null; expected a StackBuilder.", nameof(configure));
            return With(Copy(embedDim: s.WidthValue, depth: s.DepthValue, heads: s.HeadsValue, mlpRatio: s.MlpRatioValue));
        }

        /// <summary>Configures the decoder (width, depth, heads).</summary>
        public MaeBuilder Decoder(Func<StackBuilder, StackBuilder> configure)
        {
            ArgumentNullException.ThrowIfNull(configure);
            var s = configure(new StackBuilder(_config.DecoderEmbedDim, _config.DecoderDepth, _config.DecoderHeads, _config.MlpRatio))
                ?? throw new ArgumentException("configure returned null; expected a StackBuilder.", nameof(configure));
            return With(Copy(decoderEmbedDim: s.WidthValue, decoderDepth: s.DepthValue, decoderHeads: s.HeadsValue));
        }

        /// <summary>Predict per-patch normalised pixels (MAE's better default; on unless turned off).</summary>
        public MaeBuilder NormPixLoss(bool enabled = true) => With(Copy(normPixLoss: enabled));

        /// <summary>Prepend a learnable cls token (on unless turned off).</summary>
        public MaeBuilder ClsToken(bool enabled = true) => With(Copy(clsToken: enabled));

        /// <summary>Learned positional tables instead of fixed sin-cos ones.</summary>
        public MaeBuilder LearnedPositions(bool enabled = true) => With(Copy(learnedPosEmbed: enabled));

        /// <summary>Attention kernel of every block.</summary>
        public MaeBuilder Attention(AttentionKind kind) =>
            With(Copy(attention: kind == AttentionKind.Sdpa ? AttentionKernel.Sdpa : AttentionKernel.Math));

        /// <summary>Seed of the initial weights.</summary>
        public MaeBuilder Seed(long seed) => new(_config, seed, _device);

        /// <summary>Device of the weights: "cpu" (default), "cuda", "cuda:1".</summary>
        public MaeBuilder Device(string device) => new(_config, _seed, device);

        /// <summary>
        /// Every problem of the current settings, each naming the setting and its allowed range;
        /// empty when <see cref="Build"/> would succeed.
        /// </summary>
        public IReadOnlyList<string> Validate() => MaeConfigModule.problems(_config).Select(e => e.Message).ToArray();

        /// <summary>
        /// Builds the model. Throws <see cref="ArgumentException"/> naming the first bad setting
        /// and its allowed range. The caller disposes the model.
        /// </summary>
        public MaeModel Build()
        {
            var problems = MaeConfigModule.problems(_config);
            if (problems.Length > 0) throw problems[0];
            var device = Runtime.device(_device ?? "");
            return MaeModel.Wrap(MaskedAutoencoder.Create(_config, _seed, device));
        }

        /// <summary>
        /// Builds the model when the settings are valid; otherwise returns false with every
        /// problem in <paramref name="errors"/> and no model.
        /// </summary>
        public bool TryBuild(out MaeModel? model, out IReadOnlyList<string> errors)
        {
            errors = Validate();
            model = errors.Count == 0 ? Build() : null;
            return model is not null;
        }

        private static MaskingKind KindOf(MaskingStrategy m) =>
            m.IsRandomShared ? MaskingKind.RandomShared : m.IsBlockWise ? MaskingKind.BlockWise : m.IsTube ? MaskingKind.Tube : m.IsRandomPerChannel ? MaskingKind.RandomPerChannel : MaskingKind.Random;

        private MaeConfig Copy(
            int? embedDim = null, int? depth = null, int? heads = null, int? decoderEmbedDim = null,
            int? decoderDepth = null, int? decoderHeads = null, double? mlpRatio = null, MaskingStrategy? masking = null,
            bool? normPixLoss = null, bool? clsToken = null, bool? learnedPosEmbed = null, AttentionKernel? attention = null)
        {
            var c = _config;
            return new MaeConfig(c.Input,
                embedDim ?? c.EmbedDim, depth ?? c.Depth, heads ?? c.Heads,
                decoderEmbedDim ?? c.DecoderEmbedDim, decoderDepth ?? c.DecoderDepth, decoderHeads ?? c.DecoderHeads,
                mlpRatio ?? c.MlpRatio, masking ?? c.Masking, normPixLoss ?? c.NormPixLoss, clsToken ?? c.ClsToken,
                learnedPosEmbed ?? c.LearnedPosEmbed, attention ?? c.Attention, c.EncoderInput);
        }
    }
}
