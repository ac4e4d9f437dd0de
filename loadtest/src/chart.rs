//! Small PNG charts for the report, drawn on a plain RGB canvas: the `png`
//! encoder is the only dependency (no plotting crate, no fonts to ship). Titles
//! and legends live in the Markdown next to each image; the images carry axes,
//! gridlines and the numbers at the ends of each axis.

use std::path::Path;

type Rgb = [u8; 3];

pub const BLUE: Rgb = [0x1f, 0x6f, 0xeb];
pub const RED: Rgb = [0xd1, 0x24, 0x2f];
pub const GREEN: Rgb = [0x1a, 0x7f, 0x37];
const GREY: Rgb = [0x88, 0x88, 0x88];
const LIGHT: Rgb = [0xe6, 0xe6, 0xe6];
const BLACK: Rgb = [0x20, 0x20, 0x20];

const W: usize = 640;
const H: usize = 260;
const LEFT: usize = 56;
const RIGHT: usize = 16;
const TOP: usize = 14;
const BOTTOM: usize = 28;

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            pixels: vec![0xff; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x < 0 || y < 0 || x >= W as i64 || y >= H as i64 {
            return;
        }
        let at = (y as usize * W + x as usize) * 3;
        self.pixels[at..at + 3].copy_from_slice(&color);
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, color);
            }
        }
    }

    /// A line two pixels wide (Bresenham, doubled vertically).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            self.set(x, y + 1, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in a 3×5 pixel font, scaled ×2. Unknown characters are blank.
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let (px, py) = (x + (i as i64 * 8) + col * 2, y + row as i64 * 2);
                        self.rect(px, py, px + 1, py + 1, color);
                    }
                }
            }
        }
    }

    fn frame(&mut self) {
        for i in 0..=4 {
            let y = (TOP + (H - TOP - BOTTOM) * i / 4) as i64;
            self.rect(LEFT as i64, y, (W - RIGHT) as i64, y, LIGHT);
        }
        let (x0, y1) = (LEFT as i64, (H - BOTTOM) as i64);
        self.rect(x0, TOP as i64, x0, y1, GREY);
        self.rect(x0, y1, (W - RIGHT) as i64, y1, GREY);
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, W as u32, H as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        Ok(())
    }
}

/// 3×5 glyphs, one row per entry, high bit on the left.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        '%' => [0b101, 0b001, 0b010, 0b100, 0b101],
        '-' => [0, 0, 0b111, 0, 0],
        'k' => [0b100, 0b101, 0b110, 0b101, 0b101],
        'm' => [0, 0b110, 0b111, 0b101, 0b101],
        's' => [0, 0b011, 0b110, 0b011, 0b110],
        '#' => [0b101, 0b111, 0b101, 0b111, 0b101],
        _ => [0; 5],
    }
}

/// A compact number: 1234 → "1.2k", 0.25 → "0.25".
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn plot_x(i: f64, max: f64) -> i64 {
    (LEFT as f64 + i / max.max(1e-9) * (W - LEFT - RIGHT) as f64) as i64
}

fn plot_y(v: f64, max: f64) -> i64 {
    let span = (H - TOP - BOTTOM) as f64;
    ((H - BOTTOM) as f64 - (v / max.max(1e-9)).clamp(0.0, 1.0) * span) as i64
}

/// One line: its colour, its points (t, value) and the value at the top of the axis.
pub type Series = (Rgb, Vec<(f64, f64)>, f64);

/// Lines over time: each series is (colour, points (t, value), its own maximum).
/// The left axis is labelled with the first series' maximum.
pub fn lines(path: &Path, series: &[Series], x_unit: &str) -> anyhow::Result<()> {
    let mut canvas = Canvas::new();
    canvas.frame();
    let max_x = series
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    for (color, points, max) in series {
        for pair in points.windows(2) {
            canvas.line(
                (plot_x(pair[0].0, max_x), plot_y(pair[0].1, *max)),
                (plot_x(pair[1].0, max_x), plot_y(pair[1].1, *max)),
                *color,
            );
        }
    }
    if let Some((color, _, max)) = series.first() {
        canvas.text(4, TOP as i64, &short(*max), *color);
    }
    if let Some((color, _, max)) = series.get(1) {
        canvas.text(4, TOP as i64 + 14, &short(*max), *color);
    }
    canvas.text(4, (H - BOTTOM - 10) as i64, "0", BLACK);
    let label = format!("{}{x_unit}", short(max_x));
    canvas.text(
        (W - RIGHT) as i64 - label.len() as i64 * 8,
        (H - BOTTOM + 8) as i64,
        &label,
        BLACK,
    );
    canvas.save(path)
}

/// Bars, one per value, left to right; `labels` (if any) for the first and last bar.
pub fn bars(
    path: &Path,
    values: &[f64],
    color: Rgb,
    first_last: (&str, &str),
) -> anyhow::Result<()> {
    let mut canvas = Canvas::new();
    canvas.frame();
    let max = values.iter().copied().fold(0.0, f64::max);
    let axis_max = if max > 0.0 { max } else { 1.0 };
    let n = values.len().max(1);
    let slot = (W - LEFT - RIGHT) as f64 / n as f64;
    for (i, value) in values.iter().enumerate() {
        let x0 = LEFT as f64 + i as f64 * slot + (slot * 0.15).min(3.0);
        let x1 = LEFT as f64 + (i + 1) as f64 * slot - (slot * 0.15).min(3.0);
        let top = plot_y(*value, axis_max);
        if *value > 0.0 {
            canvas.rect(
                x0 as i64,
                top,
                (x1 as i64).max(x0 as i64),
                (H - BOTTOM - 1) as i64,
                color,
            );
        }
    }
    canvas.text(4, TOP as i64, &short(max), color);
    canvas.text(4, (H - BOTTOM - 10) as i64, "0", BLACK);
    canvas.text(LEFT as i64, (H - BOTTOM + 8) as i64, first_last.0, BLACK);
    canvas.text(
        (W - RIGHT) as i64 - first_last.1.len() as i64 * 8,
        (H - BOTTOM + 8) as i64,
        first_last.1,
        BLACK,
    );
    canvas.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_valid_pngs_of_the_drawn_size() {
        let dir = std::env::temp_dir().join(format!("meetease-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line_path = dir.join("lines.png");
        lines(
            &line_path,
            &[(BLUE, vec![(1.0, 10.0), (2.0, 30.0), (3.0, 20.0)], 30.0)],
            "s",
        )
        .unwrap();
        let bar_path = dir.join("bars.png");
        bars(&bar_path, &[0.0, 1.5, 3.0], RED, ("0", "2")).unwrap();
        for (path, color) in [(line_path, BLUE), (bar_path, RED)] {
            let decoder =
                png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
            let mut reader = decoder.read_info().unwrap();
            let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut pixels).unwrap();
            assert_eq!((info.width, info.height), (W as u32, H as u32));
            // The data was drawn in its colour.
            let drawn = pixels.chunks(3).filter(|p| *p == color).count();
            assert!(drawn > 100, "{} pixels of the data colour", drawn);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
