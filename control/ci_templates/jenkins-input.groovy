input {
    message '{{message}}'
    ok 'Deploy'
}
