"""A hand-written copy of the reference builder (gretel-synthetics 0.21 default_model.py /
dp_model.py), written directly against tf-keras, as the yardstick for the lstm-text template."""

from compiler.tf import tf_keras, tf_privacy_optimizers


def build_reference(
    vocab_size=20000,
    embedding_dim=256,
    rnn_units=256,
    dropout_rate=0.2,
    rnn_initializer="glorot_uniform",
    learning_rate=0.01,
    batch_size=64,
    dp=False,
    dp_l2_norm_clip=3.0,
    dp_noise_multiplier=0.1,
    dp_microbatches=1,
):
    keras = tf_keras()
    model = keras.Sequential(
        [
            keras.layers.Embedding(vocab_size, embedding_dim, batch_input_shape=[batch_size, None]),
            keras.layers.Dropout(dropout_rate),
            keras.layers.LSTM(
                rnn_units,
                return_sequences=True,
                stateful=True,
                recurrent_initializer=rnn_initializer,
            ),
            keras.layers.Dropout(dropout_rate),
            keras.layers.LSTM(
                rnn_units,
                return_sequences=True,
                stateful=True,
                recurrent_initializer=rnn_initializer,
            ),
            keras.layers.Dropout(dropout_rate),
            keras.layers.Dense(vocab_size),
        ]
    )
    if dp:
        standard, _ = tf_privacy_optimizers()
        optimizer = standard.make_keras_optimizer_class(keras.optimizers.legacy.RMSprop)(
            l2_norm_clip=dp_l2_norm_clip,
            noise_multiplier=dp_noise_multiplier,
            num_microbatches=dp_microbatches,
            learning_rate=learning_rate,
        )
    else:
        optimizer = keras.optimizers.legacy.RMSprop(learning_rate=learning_rate)

    def loss(labels, logits):
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model
