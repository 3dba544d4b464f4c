//! Where sliding-window layers read: the one place that turns an output position and a
//! kernel tap into an input index (used by the loader, the trainer and the graph builder).

use super::analysis::LayerAnalysis;
use super::layer::{Conv2d, Layer};
use super::range::Shape;

/// The input image, kernel, stride, padding and output size of a convolution or a pooling
/// layer. Images are `(channel, row, column)` row-major; a convolution's patch column is
/// `(channel, ky, kx)` row-major, as PyTorch lays out its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Zeros around the image on every side.
    pub padding: usize,
    /// Output height.
    pub out_height: usize,
    /// Output width.
    pub out_width: usize,
}

impl Window {
    /// The window of declared layer `i` (`QuantConv2d`, `AvgPool2d` or `MaxPool2d`) of an
    /// analysed network: its input image is the previous layer's shape (or a first
    /// convolution's declared input). `None` for other layers and for shapes the analysis
    /// could not determine.
    pub fn of_layer(layers: &[Layer], analysis: &[LayerAnalysis], i: usize) -> Option<Window> {
        let (kernel, stride, padding) = match *layers.get(i)? {
            Layer::QuantConv2d(Conv2d {
                kernel,
                stride,
                padding,
                ..
            }) => (kernel, stride, padding),
            Layer::AvgPool2d { kernel } | Layer::MaxPool2d { kernel } => (kernel, kernel, 0),
            _ => return None,
        };
        Window::new(input_image(layers, analysis, i)?, kernel, stride, padding)
    }

    /// The window of a `kernel × kernel` filter moving by `stride` over an image of
    /// `channels × height × width` with `padding` zeros around it; `None` where the padded
    /// image is smaller than the kernel or the stride is 0. Output sizes floor, as PyTorch's.
    pub fn new(
        (channels, height, width): (usize, usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Option<Window> {
        let side = |n: usize| {
            let padded = n.checked_add(padding.checked_mul(2)?)?;
            Some(padded.checked_sub(kernel)? / (stride > 0).then_some(stride)? + 1)
        };
        Some(Window {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
            out_height: side(height)?,
            out_width: side(width)?,
        })
    }

    /// Values of the input image.
    pub fn input_features(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Output positions per channel.
    pub fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Taps of one channel's window (`kernel²`).
    pub fn taps(&self) -> usize {
        self.kernel * self.kernel
    }

    /// The input index that output position `pos` (row-major) reads at patch column `col`
    /// (`(channel, ky, kx)` row-major), or `None` where it falls in the zero padding.
    pub fn source(&self, pos: usize, col: usize) -> Option<usize> {
        let k = self.kernel;
        let (c, ky, kx) = (col / (k * k), (col / k) % k, col % k);
        let (oy, ox) = (pos / self.out_width, pos % self.out_width);
        let y = (oy * self.stride + ky).checked_sub(self.padding)?;
        let x = (ox * self.stride + kx).checked_sub(self.padding)?;
        (y < self.height && x < self.width).then(|| (c * self.height + y) * self.width + x)
    }

    /// The input indices a pooling window reads: channel `channel`, output position `pos`,
    /// every tap inside the image (row-major).
    pub fn pool_sources(&self, channel: usize, pos: usize) -> impl Iterator<Item = usize> + '_ {
        let first = channel * self.taps();
        (first..first + self.taps()).filter_map(move |col| self.source(pos, col))
    }
}

/// The image `(channels, height, width)` entering declared layer `i`: the previous layer's
/// shape, or the declared input of a first convolution.
pub fn input_image(
    layers: &[Layer],
    analysis: &[LayerAnalysis],
    i: usize,
) -> Option<(usize, usize, usize)> {
    match (
        i.checked_sub(1)
            .and_then(|p| analysis.get(p))
            .map(|a| a.shape),
        layers.get(i)?,
    ) {
        (
            Some(Shape::Image {
                channels,
                height,
                width,
            }),
            _,
        ) => Some((channels, height, width)),
        (
            _,
            Layer::QuantConv2d(Conv2d {
                in_channels,
                input: Some((h, w)),
                ..
            }),
        ) => Some((*in_channels, *h, *w)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(stride: usize, padding: usize) -> Window {
        Window::new((2, 4, 5), 3, stride, padding).unwrap()
    }

    #[test]
    fn sources_follow_a_direct_convolution_index() {
        for (stride, padding) in [(1, 0), (1, 1), (2, 1), (2, 0)] {
            let g = window(stride, padding);
            for pos in 0..g.positions() {
                for col in 0..g.channels * g.taps() {
                    let (c, ky, kx) = (col / 9, (col / 3) % 3, col % 3);
                    let y = (pos / g.out_width * stride + ky) as isize - padding as isize;
                    let x = (pos % g.out_width * stride + kx) as isize - padding as isize;
                    let inside = (0..4).contains(&y) && (0..5).contains(&x);
                    let expected = inside.then(|| c * 20 + y as usize * 5 + x as usize);
                    assert_eq!(
                        g.source(pos, col),
                        expected,
                        "{stride} {padding} {pos} {col}"
                    );
                }
            }
        }
    }

    #[test]
    fn pool_windows_tile_the_image_by_channel() {
        let g = Window::new((2, 4, 4), 2, 2, 0).unwrap();
        assert_eq!((g.out_height, g.out_width), (2, 2));
        assert_eq!(Window::new((1, 2, 2), 3, 1, 0), None);
        assert_eq!(Window::new((1, 2, 2), 1, 0, 0), None);
        assert_eq!(g.pool_sources(0, 0).collect::<Vec<_>>(), [0, 1, 4, 5]);
        assert_eq!(g.pool_sources(1, 3).collect::<Vec<_>>(), [26, 27, 30, 31]);
        let mut all: Vec<usize> = (0..2)
            .flat_map(|c| (0..4).flat_map(move |p| g.pool_sources(c, p).collect::<Vec<_>>()))
            .collect();
        all.sort();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
    }
}
