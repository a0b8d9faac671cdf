// Package modelfile owns the files a model leaves the node in: the global
// model's flat []float32 as named tensors in PyTorch's layout (Layout),
// written and read as safetensors (EncodeSafetensors, ReadSafetensors,
// with every check a file from outside needs) and written as NumPy's .npz
// (WriteNPZ). The external trainer and `globalbrain export` use it.
//
// The names are the model spec's ("fc1.weight", "conv1.bias", see
// train.Model.Tensors); the shapes are those torch.nn modules of the same
// names hold, so that load_state_dict takes the file as it is: a dense
// weight is nn.Linear's [out, in] (the flat vector holds [in, out]), a
// convolution kernel is nn.Conv2d's [out, in, kh, kw] (the flat vector
// holds [out, kh, kw, in]), and the CNN's fc1 reads the last pooled
// feature map flattened channel first, (c, h, w), as torch.flatten of an
// NCHW tensor does (the flat vector's layers run channel-last). The dense
// models' first layer takes the input flattened channel-last (h, w, c),
// as the node's data sets hold it; for one-channel images (MNIST) that is
// the plain row-major flattening.
//
// safetensors goes through github.com/nlpodyssey/safetensors, a port of
// the format's reference implementation (header and offsets checked on
// reading). No Go library writes .npz, and the .npy format is a short
// header before the raw array, so it is written here.
package modelfile
