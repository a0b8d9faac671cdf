// Package nodeconfig owns a node's own configuration: the YAML file an
// institution writes for its node (node.yaml), as opposed to the genesis
// manifest the whole consortium shares.
//
// The file names the node's identity key, the consortium's manifest, the
// addresses the node listens on and the address book of the other members,
// the store directory, the local HTTP API's address, an optional pre-shared
// key, the log level, the local data the built-in trainer uses, and an optional
// external trainer command (only ever from this file, never from the manifest). Nothing
// in it changes the consortium ID: two members may keep their files in any
// layout, with any addresses.
//
//	identity_key: identity.key          # default, next to node.yaml
//	manifest: ../consortium.yaml
//	listen: [/ip4/0.0.0.0/tcp/4001]
//	address_book:
//	  - /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW...
//	store: store                        # default
//	http: 127.0.0.1:9464                # default; loopback unless http_public
//	psk_file: swarm.key                 # optional; TCP only
//	log_level: info                     # debug, info, warn or error
//	data:
//	  dataset: mnist                    # mnist, fashion-mnist, idx or csv
//	  partition: iid                    # iid, shards or dirichlet
//	  members: 3                        # the training set split in 3 ...
//	  index: 0                          # ... and this node trains on part 0
//	max_examples: 0                     # 0: the manifest's cap
//	privacy:
//	  epsilon: 0                        # 0: the manifest's ceiling; only lower
//	trainer:                            # optional: an external trainer
//	  command: [/usr/bin/python3, train.py]
//	  timeout: 30m                      # default
//
// Load reads a file strictly, with the engine of package internal/strictyaml:
// unknown keys, duplicate keys, aliases, anchors, merge keys, values of the
// wrong type and several documents are rejected, omitted fields take
// the defaults of Default (applied in UnmarshalYAML), and the result is
// checked by Validate. Every problem is a *FieldError that names the file,
// the line where it is known and the field in YAML's dotted form
// ("node.yaml:7: http: 0.0.0.0:9464 is not a loopback address ..."); all
// problems are reported at once, joined with errors.Join, and each matches
// ErrInvalid under errors.Is. Relative paths (identity_key, manifest, store,
// psk_file, data.dir) are resolved against the directory of the file.
//
// An institution's own data is dataset idx (data.idx: IDX image and label
// files) or dataset csv (data.csv: the file, header, delimiter, the label
// column and the feature columns by name or number, and a normalisation
// stated in the file, never estimated from the data, so every member
// normalises alike); without a test set, data.validation holds out a seeded
// part of the training set for the evaluator:
//
//	data:
//	  dataset: csv
//	  csv:
//	    file: patients.csv
//	    label: diagnosis                # a header name, or a column number (1 is the first)
//	    features: [age, bmi, 7]         # default: every column but the label
//	    normalize: {method: minmax, min: [0], max: [120]}
//	  validation: {fraction: 0.2, seed: 1}
//
// Checks that need the manifest (the data set's shape against the model, the
// example cap and the privacy ceiling against the manifest's: a node may
// only lower either) are in CheckManifest; EpsilonCeiling is the node's
// privacy budget.
package nodeconfig
