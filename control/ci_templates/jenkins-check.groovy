stage('{{title}}') {
    agent {
        docker {
            image '{{image}}'
            {{agent_extra}}
        }
    }
    steps {
        {{steps}}
    }
    {{post}}
}
