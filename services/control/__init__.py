"""Control plane: the training API, the artifact store and the queue workers pull tasks from."""
