print("trav")
