//! Avatar images: checking an upload, resizing and re-encoding it, and the generated
//! default.
//!
//! An upload goes through, in order: a byte limit ([`MAX_UPLOAD_BYTES`]); the format
//! from the content's magic bytes (PNG, JPEG or WebP, whatever the name or
//! `Content-Type` says); the dimensions from the header alone, refused above
//! [`MAX_SIDE`] or [`MAX_PIXELS`] *before* any pixel is decoded (a decompression bomb
//! claims huge dimensions in a few bytes); decoding under `image::Limits` as a second
//! guard; a square centre crop resized to each of [`SIZES`]; PNG re-encoding. The
//! re-encoded file holds pixels only, so EXIF, GPS and colour-profile metadata of the
//! upload are gone.

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use proto::ErrorCode;
use servicekit::ApiError;
use std::io::Cursor;

/// The largest upload accepted, in bytes (the gateway lets 8 MiB through on this route).
pub const MAX_UPLOAD_BYTES: usize = 5 * 1024 * 1024;
/// The largest width or height accepted.
pub const MAX_SIDE: u32 = 8192;
/// The most pixels accepted (a 16-megapixel photo; decoded as RGBA that is 64 MiB).
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// The square sizes stored and served, in pixels.
pub const SIZES: [u32; 2] = [256, 64];
/// The size served when none is asked for.
pub const DEFAULT_SIZE: u32 = 256;
/// The stored images' media type.
pub const STORED_CONTENT_TYPE: &str = "image/png";

/// The formats accepted, recognised by their magic bytes.
fn accepted_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => Some(format),
        _ => None,
    }
}

fn unsupported() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedImage,
        "the file is not a PNG, JPEG or WebP image",
    )
}

fn invalid() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidImage,
        "the image is damaged or truncated and cannot be decoded",
    )
}

/// Check an upload without decoding its pixels: the format and the dimensions its
/// header claims. Cheap; run it before [`process`].
pub fn inspect(bytes: &[u8]) -> Result<(ImageFormat, u32, u32), ApiError> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(too_many_bytes());
    }
    let format = accepted_format(bytes).ok_or_else(unsupported)?;
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|_| invalid())?;
    if width == 0 || height == 0 {
        return Err(invalid());
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ApiError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "the image is {width}×{height} pixels; at most {MAX_SIDE} pixels a side and {} megapixels are accepted",
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(invalid());
    }
    Ok((format, width, height))
}

/// The payload-size error, the same whether the header or the body told us.
pub fn too_many_bytes() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the image is larger than {} MiB",
            MAX_UPLOAD_BYTES / (1024 * 1024)
        ),
    )
}

/// A JPEG ends with its EOI marker (`FF D9`), possibly followed by a little padding.
/// The decoder fills a truncated scan with grey instead of failing, so a cut-off
/// upload is caught here.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|pair| pair == [0xFF, 0xD9])
}

/// Decode an upload [`inspect`] accepted and produce one PNG per size in [`SIZES`].
/// CPU-bound: run it on the blocking pool.
pub fn process(bytes: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, ApiError> {
    let (format, _, _) = inspect(bytes)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| {
        tracing::info!(error = %err, "an avatar upload did not decode");
        invalid()
    })?;
    let square = centre_square(decoded);
    let mut out = Vec::with_capacity(SIZES.len());
    for size in SIZES {
        let resized = square.resize_exact(size, size, image::imageops::FilterType::Lanczos3);
        let resized = if resized.color().has_alpha() {
            DynamicImage::ImageRgba8(resized.into_rgba8())
        } else {
            DynamicImage::ImageRgb8(resized.into_rgb8())
        };
        let mut png = Cursor::new(Vec::new());
        resized
            .write_to(&mut png, ImageFormat::Png)
            .map_err(ApiError::internal)?;
        out.push((size, png.into_inner()));
    }
    Ok(out)
}

fn centre_square(image: DynamicImage) -> DynamicImage {
    let (w, h) = (image.width(), image.height());
    let side = w.min(h);
    if w == h {
        image
    } else {
        image.crop_imm((w - side) / 2, (h - side) / 2, side, side)
    }
}

/// The generated avatar: the name's initials on a colour picked from the user id.
/// Only letters and digits reach the SVG, XML-escaped anyway.
pub fn default_svg(seed: &str, display_name: &str, size: u32) -> String {
    const COLOURS: [&str; 8] = [
        "#1e88e5", "#43a047", "#e53935", "#8e24aa", "#fb8c00", "#00897b", "#3949ab", "#6d4c41",
    ];
    // fnv1a is stable across builds, so a person keeps their colour.
    let colour = COLOURS[(fnv1a(seed.as_bytes()) % COLOURS.len() as u64) as usize];
    let text = escape_xml(&initials(display_name));
    let font = size * 2 / 5;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" viewBox=\"0 0 {size} {size}\">\
<rect width=\"{size}\" height=\"{size}\" fill=\"{colour}\"/>\
<text x=\"50%\" y=\"50%\" dy=\".35em\" text-anchor=\"middle\" fill=\"#ffffff\" \
font-family=\"system-ui, sans-serif\" font-size=\"{font}\" font-weight=\"600\">{text}</text></svg>"
    )
}

/// Up to two initials: the first letter or digit of the first and last words.
pub fn initials(name: &str) -> String {
    let firsts: Vec<char> = name
        .split_whitespace()
        .filter_map(|word| word.chars().find(|c| c.is_alphanumeric()))
        .collect();
    let picked: String = match firsts.as_slice() {
        [] => "?".to_owned(),
        [one] => one.to_string(),
        [first, .., last] => [*first, *last].iter().collect(),
    };
    picked.to_uppercase()
}

fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// FNV-1a, 64 bits: a stable, non-cryptographic hash for colours and ETags.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::new_rgb8(width, height);
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn initials_take_the_first_and_last_words() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("ada king lovelace"), "AL");
        assert_eq!(initials("Zoë"), "Z");
        assert_eq!(initials("  "), "?");
        assert_eq!(initials("<script> alert"), "SA");
    }

    #[test]
    fn the_default_avatar_is_escaped_svg() {
        let svg = default_svg("id", "Ünal Ökten", 64);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(">ÜÖ<"));
        assert!(!default_svg("id", "<&>", 64).contains("<&>"));
    }

    #[test]
    fn a_png_is_resized_to_every_size() {
        let out = process(&png(300, 200)).unwrap();
        let sizes: Vec<u32> = out.iter().map(|(size, _)| *size).collect();
        assert_eq!(sizes, SIZES);
        for (size, bytes) in out {
            let decoded = image::load_from_memory(&bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (size, size));
        }
    }

    #[test]
    fn non_images_are_unsupported() {
        let err = inspect(b"GIF89a......").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedImage);
        let err = inspect(b"hello").unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedImage);
    }
}
