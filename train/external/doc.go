// Package external owns the external trainer: a program of the member's
// choosing (a PyTorch script, say) that trains the round's model in place
// of the built-in engine, and the contract the node and the program speak.
//
// Each round the node trains, Trainer.Train empties the private working
// directory (mode 0700, under the node's store) and writes into it:
//
//	global.safetensors   the global model G(r-1), in package modelfile's
//	                     PyTorch layout (load_state_dict takes it)
//	round.json           RoundConfig: round, epochs, batch_size, lr,
//	                     prox_mu, seed, max_examples, the model, the three
//	                     paths, and the node config's data section
//
// then runs the configured command with the path of round.json appended
// (and in GLOBALBRAIN_ROUND_CONFIG), in the node config's directory, in a
// process group of its own that is killed when trainer.timeout passes or
// the node stops. Its stdout and stderr go to the node's log line by line
// ("trainer output"; at most 1000 lines a round, each cut at 2000 bytes).
// The command writes:
//
//	trained.safetensors  the trained model: the same tensors, float32, of
//	                     the same shapes, every value finite
//	result.json          {"examples": N, "metrics": {"train_loss": x, ...}}
//
// and exits 0. The node checks everything (a non-zero exit, a timeout, a
// missing or malformed file, a wrong tensor name, shape or dtype, a
// non-finite value, an example count below 1 or above the cap) and turns
// any failure into an error that names it: the node logs it and declines
// the round, and the next round runs the command afresh. The update it
// publishes is the trained model minus the global model, with the example
// count the command claimed (never clamped). The working directory is
// emptied again when the round's run ends.
package external
