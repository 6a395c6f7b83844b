//! The bench's PNG chart, drawn here with no plotting stack: one panel per scenario and
//! metric (req/s on top, p99 below), a group of bars per concurrency, one bar per system,
//! each panel on its own scale. Text is the public-domain 8x8 font of `font8x8`.

use std::path::Path;

use font8x8::UnicodeFonts as _;

use crate::report::Row;

const PANEL_W: usize = 330;
const PANEL_H: usize = 230;
const MARGIN: usize = 16;
const LEGEND_H: usize = 40;
const BG: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];
const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: BG.iter().copied().cycle().take(w * h * 3).collect(),
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(self.w) {
                let i = (yy * self.w + xx) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(x + n * 8 + col, y + row, 1, 1, c);
                    }
                }
            }
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut enc = png::Encoder::new(file, u32::try_from(self.w)?, u32::try_from(self.h)?);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&self.px)?;
        Ok(())
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn uniq<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// One metric of one scenario, at (`x`, `y`).
fn panel(
    cv: &mut Canvas,
    (x, y): (usize, usize),
    title: &str,
    rows: &[&Row],
    systems: &[String],
    metric: fn(&Row) -> f64,
) {
    cv.text(x + 4, y + 2, title, INK);
    let (top, bottom, left) = (y + 20, y + PANEL_H - 24, x + 40);
    let width = PANEL_W - 48;
    let max = rows
        .iter()
        .map(|r| metric(r))
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    for step in 0..=4 {
        let gy = bottom - (bottom - top - 10) * step / 4;
        cv.rect(left, gy, width, 1, GRID);
        cv.text(
            x,
            gy.saturating_sub(4),
            &short(max * step as f64 / 4.0),
            INK,
        );
    }
    let conns = uniq(rows.iter().map(|r| r.conns));
    let group_w = width / conns.len().max(1);
    for (g, c) in conns.iter().enumerate() {
        let members: Vec<&&Row> = rows.iter().filter(|r| r.conns == *c).collect();
        let bar_w = ((group_w - 10) / members.len().max(1)).min(44);
        let start = left + g * group_w + (group_w - bar_w * members.len()) / 2;
        for (b, r) in members.iter().enumerate() {
            let h = ((bottom - top - 10) as f64 * metric(r) / max) as usize;
            let color = systems
                .iter()
                .position(|s| *s == r.system)
                .map_or(INK, |i| PALETTE[i % PALETTE.len()]);
            let bx = start + b * bar_w;
            cv.rect(bx, bottom - h, bar_w.saturating_sub(2), h, color);
            let label = short(metric(r));
            let lx = (bx + bar_w / 2).saturating_sub(label.len() * 4);
            cv.text(lx, (bottom - h).saturating_sub(10), &label, INK);
        }
        let label = format!("c={c}");
        cv.text(
            left + g * group_w + group_w / 2 - label.len() * 4,
            bottom + 6,
            &label,
            INK,
        );
    }
    cv.rect(left, bottom, width, 1, INK);
}

/// Draw every scenario of `rows` into a PNG at `path`.
pub fn render(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let scenarios = uniq(rows.iter().map(|r| r.scenario.clone()));
    let systems = uniq(rows.iter().map(|r| r.system.clone()));
    let w = MARGIN * 2 + PANEL_W * scenarios.len().max(1);
    let h = MARGIN * 2 + LEGEND_H + PANEL_H * 2;
    let mut cv = Canvas::new(w, h);
    for (i, s) in systems.iter().enumerate() {
        let (lx, ly) = (MARGIN + (i % 4) * 200, MARGIN + (i / 4) * 14);
        cv.rect(lx, ly, 10, 8, PALETTE[i % PALETTE.len()]);
        cv.text(lx + 14, ly, s, INK);
    }
    for (i, s) in scenarios.iter().enumerate() {
        let mine: Vec<&Row> = rows.iter().filter(|r| &r.scenario == s).collect();
        let x = MARGIN + i * PANEL_W;
        let y = MARGIN + LEGEND_H;
        panel(
            &mut cv,
            (x, y),
            &format!("{s}: req/s"),
            &mine,
            &systems,
            |r| r.sample.rps,
        );
        panel(
            &mut cv,
            (x, y + PANEL_H),
            &format!("{s}: p99 ms"),
            &mine,
            &systems,
            |r| r.sample.p99_us / 1000.0,
        );
    }
    cv.save(path)
}
